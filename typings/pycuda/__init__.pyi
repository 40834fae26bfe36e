"""Type stubs for pycuda, only what tempseg uses: `pycuda.driver` (tempseg/runtime/cuda.py's PyCudaApi).

pycuda compiles against a CUDA toolkit when it installs (it is the Jetson's binding), so it is not installed
where the type checker runs; these stubs are typed from its documented API (doc/source/driver.rst).
"""
