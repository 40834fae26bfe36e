# tempseg: train -> export -> calibrate -> engine -> run, as file targets.
# Each step runs only when its artefact is missing or older than its input.
#
#   make engine MODEL=fcresnet18_t66 [PRECISION=fp16|int8|fp32] [HEIGHT=256 WIDTH=512]
#   make run    MODEL=fcresnet18_t66 [BACKEND=auto|tensorrt|tensorrt_rtx|onnxruntime|torch] [SOURCE=synthetic] [FRAMES=300]
#   make test
#
# Variables are passed to the stages quoted, never through a shell string built from them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

MODEL      ?= fcresnet18_t66
PRECISION  ?= fp16
HEIGHT     ?= 256
WIDTH      ?= 512
BATCH      ?= 1
PRESET     ?= default
BACKEND    ?= auto
SOURCE     ?= synthetic
FRAMES     ?= 300
CALIB_FRAMES ?= 128
CALIB_METHOD ?= percentile
CALIB_ARGS ?=
ENGINE_ARGS ?=
RUN_ARGS   ?=
MODELS     ?= fcresnet18 fcresnet18_t66 fcresnet34 fcresnet34_t66 fcresnet18x0.5_t66
PRECISIONS ?= fp32 fp16 int8
FORCE      ?= 0
RUNS       ?= runs

PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
# torch first: on the CPU machines here this takes the local CPU wheel instead of GBs of CUDA packages.
TORCH_SPEC ?= torch==2.13.0
# Extras of pyproject.toml to install; `make run EXTRAS=` on a Jetson installs no torch.
EXTRAS     ?= train,dev
# JetPack installs TensorRT into the system Python: let the venv see it there.
SYSTEM_SITE := $(shell $(PYTHON) -c "import tensorrt" >/dev/null 2>&1 && echo --system-site-packages)
# TensorRT-RTX builds engines without a GPU; its wheels exist for x86-64 only.
RTX_EXTRA  := $(shell [ "$$(uname -sm)" = "Linux x86_64" ] && ! $(PYTHON) -c "import tensorrt" >/dev/null 2>&1 && echo ,rtx)
STAMP      := $(VENV)/.installed

RUN_DIR    := $(RUNS)/$(MODEL)
CKPT       := $(RUN_DIR)/checkpoint.pt
ONNX_FP32  := $(RUN_DIR)/model.onnx
ONNX_FP16  := $(RUN_DIR)/model.fp16.onnx
ONNX_INT8  := $(RUN_DIR)/model.int8.onnx
GRAPH_fp32 := $(ONNX_FP32)
GRAPH_fp16 := $(ONNX_FP16)
GRAPH_int8 := $(ONNX_INT8)
ENGINE     := $(RUN_DIR)/$(PRECISION).engine

.PHONY: help setup train export calibrate engine run compare paper bench soak test lint format clean FORCE

help:
	@echo "make engine MODEL=fcresnet18_t66 [PRECISION=fp16|int8|fp32] [HEIGHT=256 WIDTH=512]"
	@echo "make run MODEL=... [PRECISION=] [BACKEND=auto|tensorrt|tensorrt_rtx|onnxruntime|torch] [SOURCE=synthetic|video.mp4|frames/|cityscapes:PATH|camera:0] [FRAMES=N]"
	@echo "make compare MODELS=\"...\" PRECISIONS=\"fp32 fp16 int8\"   make paper   make test"

# ---- environment ------------------------------------------------------------------------
$(STAMP): pyproject.toml
	@test -x "$(PY)" || $(PYTHON) -m venv $(SYSTEM_SITE) "$(VENV)"
	@if [ -n "$(TORCH_SPEC)" ] && [[ ",$(EXTRAS)," == *,train,* ]]; then "$(PY)" -m pip install -q "$(TORCH_SPEC)"; fi
	"$(PY)" -m pip install -q -e ".[$(EXTRAS)$(RTX_EXTRA)]"
	@touch "$@"

setup: $(STAMP)

# ---- stages -------------------------------------------------------------------------------
$(CKPT): | $(STAMP)
	@"$(PY)" -m train --model "$(MODEL)" --preset "$(PRESET)" --out-dir "$(RUN_DIR)"

# Rewritten only when the size changes, so a new HEIGHT/WIDTH re-exports and nothing else does.
$(RUN_DIR)/export.args: FORCE
	@mkdir -p "$(RUN_DIR)"
	@echo "$(HEIGHT)x$(WIDTH) batch $(BATCH)" | cmp -s - "$@" || echo "$(HEIGHT)x$(WIDTH) batch $(BATCH)" > "$@"

$(ONNX_FP32) $(ONNX_FP16) &: $(CKPT) $(RUN_DIR)/export.args | $(STAMP)
	@"$(PY)" -m export --model "$(MODEL)" --checkpoint "$(CKPT)" --height "$(HEIGHT)" --width "$(WIDTH)" --batch "$(BATCH)" --out-dir "$(RUN_DIR)"

$(ONNX_INT8): $(ONNX_FP32) | $(STAMP)
	@"$(PY)" -m calibration --onnx "$(ONNX_FP32)" --frames "$(CALIB_FRAMES)" --method "$(CALIB_METHOD)" $(CALIB_ARGS)

.SECONDEXPANSION:
$(RUN_DIR)/%.engine: $$(GRAPH_$$*) | $(STAMP)
	@"$(PY)" -m engine --onnx "$<" --out "$@" $(ENGINE_ARGS)

train: $(CKPT)
export: $(ONNX_FP32) $(ONNX_FP16)
calibrate: $(ONNX_INT8)
engine: $(ENGINE)

# `make run` runs the engine when asked for, or when BACKEND=auto finds TensorRT and a GPU
# (a desktop /dev/nvidia0 or a Jetson); ONNX Runtime on the graph otherwise.
HAVE_TRT_GPU := $(shell $(PYTHON) -c "import tensorrt" >/dev/null 2>&1 && { [ -e /dev/nvidia0 ] || [ -e /etc/nv_tegra_release ]; } && echo yes)
RUN_ENGINE := $(if $(or $(filter tensorrt tensorrt_rtx,$(BACKEND)),$(and $(filter auto,$(BACKEND)),$(HAVE_TRT_GPU))),$(ENGINE))

run: $(GRAPH_$(PRECISION)) $(RUN_ENGINE) | $(STAMP)
	@"$(PY)" -m runtime --model-dir "$(RUN_DIR)" --precision "$(PRECISION)" --backend "$(BACKEND)" --source "$(SOURCE)" --frames "$(FRAMES)" $(RUN_ARGS)

compare: | $(STAMP)
	@"$(PY)" -m bench.compare --models $(MODELS) --precisions $(PRECISIONS) --backend "$(BACKEND)" --height "$(HEIGHT)" --width "$(WIDTH)" --runs "$(RUNS)" $(if $(filter 1,$(FORCE)),--force)

paper: | $(STAMP)
	@"$(PY)" -m bench.paper

bench: | $(STAMP)
	@"$(PY)" -m bench.runtime_ratios

soak: | $(STAMP)
	@"$(PY)" -m bench.soak

# ---- quality -------------------------------------------------------------------------------
lint: | $(STAMP)
	"$(PY)" -m ruff check .
	"$(PY)" -m ruff format --check .

format: | $(STAMP)
	"$(PY)" -m ruff format .
	"$(PY)" -m ruff check --fix .

test: lint
	"$(PY)" -m pytest

clean:
	rm -rf runs

FORCE:
