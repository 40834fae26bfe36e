# tempseg: train -> export -> calibrate -> engine -> run, as file targets.
# Each step runs only when its artefact is missing or older than its input.
#
#   make engine MODEL=fcresnet18_t66 [PRECISION=fp16|int8|fp32] [HEIGHT=256 WIDTH=512] [DATA=synthetic|folder:PATH|camvid:PATH]
#   make run    MODEL=fcresnet18_t66 [BACKEND=auto|tensorrt|tensorrt_rtx|onnxruntime|torch] [SOURCE=$(DATA)] [FRAMES=300]
#   make run    MODEL=fcresnet18_t66 SOURCES="a.mp4 b.mp4 camera:0"   (one graph at batch 3, a state per stream)
#   make demo   MODEL=a MODEL2=b [PRECISION=fp16] [FRAMES=300]   (one video: the two models side by side)
#   make test
#
# Variables are passed to the stages quoted, never through a shell string built from them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

MODEL      ?= fcresnet18_t66
PRECISION  ?= fp16
HEIGHT     ?= 256
WIDTH      ?= 512
# Several streams through one graph: SOURCES="a.mp4 b.mp4 camera:0" exports the graph at a batch of one slot per
# source (BATCH=3) into $(RUNS)/MODEL/batch3 (the batch-1 graphs stay as they are), and `make run` streams each
# source in its own slot with its own state (tempseg/runtime/batch.py). Empty: one SOURCE.
SOURCES    ?=
BATCH      ?= $(if $(strip $(SOURCES)),$(words $(SOURCES)),1)
PRESET     ?= default
BACKEND    ?= auto
# The labelled video every stage reads: training (base and fine-tune), INT8 calibration, and `make run`'s default
# SOURCE (its val split: the runtime opens a spec without a split at val). synthetic: the built-in street video.
DATA       ?= synthetic
SOURCE     ?= $(DATA)
FRAMES     ?= 300
CALIB_FRAMES ?= 128
CALIB_METHOD ?= percentile
CALIB_ARGS ?=
ENGINE_ARGS ?=
RUN_ARGS   ?=
TRAIN_ARGS ?=
# extra options of the base's training (from scratch), e.g. --pretrained resnet18.pth (ImageNet weights)
BASE_ARGS  ?=
MODELS     ?= fcresnet18 fcresnet18_t66 fcresnet18_lma3r4 fcresnet18x0.5 fcresnet18x0.5_t66
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
# What the venv needs, asked of the system Python (.venv does not exist yet) by tempseg/common/platform.py, and only when
# the venv is made (recursive `=`): --system-site-packages where it imports TensorRT (JetPack installs it there),
# and the pip target: EXTRAS, plus rtx on x86-64 Linux without TensorRT (TensorRT-RTX builds engines without a
# GPU; its wheels exist for x86-64 only). `.[train,dev,rtx]`, `.[rtx]` or `.`: never `.[]` nor `.[,rtx]`.
VENV_OPTIONS = $(shell $(PYTHON) -m tempseg.common.platform venv-options)
PIP_TARGET   = $(shell $(PYTHON) -m tempseg.common.platform pip-requirement --extras "$(EXTRAS)")
STAMP      := $(VENV)/.installed

RUN_DIR    := $(RUNS)/$(MODEL)
CKPT       := $(RUN_DIR)/checkpoint.pt
# Graphs and engines of batch 1 live in the run directory, those of another batch beside them in batchN/.
GRAPH_DIR  := $(RUN_DIR)$(if $(filter-out 1,$(BATCH)),/batch$(BATCH))
# Every model is fine-tuned from the frame-by-frame base of its backbone (fcresnet18x0.5_t66 -> fcresnet18x0.5; a
# training variant from its architecture's: fcresnet18_t66+tc -> fcresnet18), trained once into $(RUNS)/NAME/base;
# a keyframe model (Accel, fcresnet18x0.5_accel34) also from the base of its reference network (fcresnet34). The
# registry names both (`python -m tempseg.models --base NAME` / `--reference NAME`, empty for a model without one;
# one line and exit 2 for a bad NAME). It imports torch, so it is asked in recipes once .venv exists, never while
# make reads this file (on a fresh clone the system Python reads it, and may have no torch).
MODELS_CLI  = "$(PY)" -m tempseg.models
# A base is trained on DATA, so its directory names the data: $(RUNS)/NAME/base for the synthetic video (as
# before DATA existed), $(RUNS)/NAME/base-KIND-LAST-SUM otherwise (folder:data/street ->
# base-folder-street-<cksum of the whole spec>: the last part of the path for people, the checksum so that two
# data sets whose paths end alike never share one). A base trained on other data is never taken for DATA's.
base_ckpt   = $(RUNS)/$(1)/base$(DATA_SLUG)/checkpoint.pt
ONNX_FP32  := $(GRAPH_DIR)/model.onnx
ONNX_FP16  := $(GRAPH_DIR)/model.fp16.onnx
ONNX_INT8  := $(GRAPH_DIR)/model.int8.onnx
GRAPH_fp32 := $(ONNX_FP32)
GRAPH_fp16 := $(ONNX_FP16)
GRAPH_int8 := $(ONNX_INT8)
ENGINE     := $(GRAPH_DIR)/$(PRECISION).engine
# Whether the venv's Python has torch, asked once when make starts (-I: a torch on PYTHONPATH is not the venv's);
# before .venv exists, whether its install will bring torch (the train extra). `yes` or empty.
comma      := ,
HAS_TORCH  := $(if $(wildcard $(PY)),$(shell "$(PY)" -I -c 'import importlib.util as u; print("yes" if u.find_spec("torch") else "")' 2>/dev/null),$(if $(filter train,$(subst $(comma), ,$(EXTRAS))),yes))
# A run directory copied over for deployment (cp -r: its graphs, perhaps its checkpoint.pt, all with new mtimes)
# onto a machine without torch: the graphs that exist are taken as they are (no prerequisites), never trained and
# exported again, which needs torch. With torch and a checkpoint, or with no graph yet, the graphs are made from
# the checkpoint as usual. Evaluated once, when make starts.
DEPLOYED   := $(if $(and $(HAS_TORCH),$(wildcard $(CKPT))),,$(wildcard $(ONNX_FP32) $(ONNX_FP16) $(ONNX_INT8)))
# Graphs taken as they are although their checkpoint is newer: one warning line naming both, once per checkpoint
# (a sub-make, `make run`'s engine build, inherits the list of checkpoints already named).
STALE      := $(if $(HAS_TORCH),,$(if $(wildcard $(CKPT)),$(shell for g in $(wildcard $(ONNX_FP32) $(ONNX_FP16)); do [ "$$g" -ot "$(CKPT)" ] && echo "$$g"; done)))
ifneq ($(STALE),)
ifeq ($(filter $(CKPT),$(TEMPSEG_STALE_NAMED)),)
$(warning $(STALE): older than $(CKPT), used as they are (no torch here to export them again))
export TEMPSEG_STALE_NAMED += $(CKPT)
endif
endif
# ---- DATA: what the model is trained on ---------------------------------------------------------------------
# A run directory records the DATA it was trained on ($(RUN_DIR)/data.spec, written with its checkpoint): DATA not
# given is that data (so `make run` scores a model on its own classes' val split), synthetic where none is
# recorded; a DATA given that differs stops in one line instead of taking a model of other classes for DATA's.
# Goals that make no run directory of MODEL neither read nor check it.
MODEL_GOALS := $(filter-out help setup compare paper bench soak docs test lint format clean gpu-check,$(or $(MAKECMDGOALS),help))
TRAINED_ON  := $(if $(MODEL_GOALS),$(if $(wildcard $(RUN_DIR)/data.spec),$(strip $(file <$(RUN_DIR)/data.spec))))
ifeq ($(origin DATA),file)
DATA       := $(or $(TRAINED_ON),synthetic)
else ifneq ($(and $(TRAINED_ON),$(filter-out $(TRAINED_ON),$(DATA))),)
$(error $(RUN_DIR) was trained on DATA=$(TRAINED_ON), not DATA=$(DATA): drop DATA (or give that one), or train on $(DATA) in another RUNS=)
endif
ifneq ($(words $(DATA)),1)
$(error DATA="$(DATA)" is not one data spec (no spaces): synthetic, folder:PATH or camvid:PATH)
endif
empty      :=
space      := $(empty) $(empty)
# --data for the training and calibration CLIs; nothing for synthetic, their default (command lines as before).
DATA_OPT   := $(if $(filter-out synthetic,$(DATA)),$(space)--data "$(DATA)")
DATA_KIND  := $(subst /,-,$(firstword $(subst :, ,$(DATA))))
DATA_SLUG  := $(if $(DATA_OPT),-$(DATA_KIND)-$(notdir $(subst :,-,$(patsubst %/,%,$(patsubst $(firstword $(subst :, ,$(DATA))):%,%,$(DATA)))))-$(firstword $(shell printf '%s' '$(subst ','\'',$(DATA))' | cksum)))
# A bad DATA (no such tree, no classes.json, ...) stops with the data layer's one line before make writes
# anything, where training is to come (no checkpoint yet): asked of the data layer by the venv's Python.
DATA_CHECK  = $(if $(and $(DATA_OPT),$(if $(wildcard $(CKPT)),,yes)),"$(PY)" -m tempseg.data classes "$(DATA)" >/dev/null && )

# A stage that needs torch (training, export) where there is none: one line and exit 2 (make's $(error), expanded
# only when the stage must run), instead of a traceback.
needs_torch = $(if $(HAS_TORCH),,$(error $(1) needs torch, which $(VENV) does not have (a venv made with the default EXTRAS=train,dev has it; a run directory copied over runs on its graphs without it)))

.PHONY: help setup base train export calibrate engine run demo compare paper bench soak docs test lint format clean FORCE

help:
	@echo "make engine MODEL=fcresnet18_t66 [PRECISION=fp16|int8|fp32] [HEIGHT=256 WIDTH=512] [DATA=synthetic|folder:PATH|camvid:PATH]"
	@echo "make run MODEL=... [PRECISION=] [BACKEND=auto|tensorrt|tensorrt_rtx|onnxruntime|torch] [SOURCE=DATA|video.mp4|frames/|cityscapes:PATH|folder:PATH[:SPLIT]|camera:0] [FRAMES=N]"
	@echo "  DATA: the labelled video to train, calibrate and run on (default synthetic, or the data MODEL was trained on):"
	@echo "        synthetic | folder:PATH (frames/, labels/, classes.json) | camvid:PATH (CamVid as distributed);"
	@echo "        bases train into RUNS/BASE/base (synthetic) or RUNS/BASE/base-KIND-NAME-CKSUM (other data)"
	@echo "make demo MODEL=a MODEL2=b [PRECISION=] [BACKEND=] [SOURCE=] [FRAMES=N]   (writes $(RUNS)/demo-a-vs-b.mp4)"
	@echo "make compare MODELS=\"...\" PRECISIONS=\"fp32 fp16 int8\" [DATA=]   make paper   make test"

# ---- environment ------------------------------------------------------------------------
$(STAMP): pyproject.toml
	@test -x "$(PY)" || $(PYTHON) -m venv $(VENV_OPTIONS) "$(VENV)"
	@if [ -n "$(TORCH_SPEC)" ] && [[ ",$(EXTRAS)," == *,train,* ]]; then "$(PY)" -m pip install -q "$(TORCH_SPEC)"; fi
	"$(PY)" -m pip install -q -e "$(PIP_TARGET)"
# dev: TensorRT 10.13's type stubs for tests/test_api_surface.py, without their TensorRT (--no-deps), into a folder
# off sys.path: in site-packages their `tensorrt` folder would import as an empty TensorRT and win `auto`.
	@if [[ ",$(EXTRAS)," == *,dev,* ]]; then "$(PY)" -m pip install -q --no-deps --upgrade --target "$(VENV)/tensorrt-stubs" tensorrt-stubs==10.13.0.35.1; fi
	@touch "$@"

setup: $(STAMP)

# ---- stages -------------------------------------------------------------------------------
# A base is trained only when its checkpoint is missing: it has no prerequisite but the venv.
$(call base_ckpt,%): | $(STAMP)
	@$(call needs_torch,$@: training)"$(PY)" -m tempseg.train --model "$*" --preset "$(PRESET)"$(DATA_OPT) --stage base --out-dir "$(RUNS)/$*/base$(DATA_SLUG)"$(if $(BASE_ARGS), $(BASE_ARGS))

# `make base MODEL=...`: the registry names the base, a sub-make trains it (the line runs under -n too).
base: | $(STAMP)
	@$(call needs_torch,make base)base=$$($(MODELS_CLI) --base "$(MODEL)") && $(MAKE) --no-print-directory "$(call base_ckpt,$$base)"

# The bases are made in the recipe, only when the checkpoint must be: a run directory copied over with its
# checkpoint (and no base) is never retrained. The registry names them; a sub-make given the names (BASE_MODEL,
# REF_MODEL on its command line) trains the bases that are missing, in order, then fine-tunes.
ifneq ($(origin BASE_MODEL),command line)
$(CKPT): | $(STAMP)
	@$(call needs_torch,$@: training)base=$$($(MODELS_CLI) --base "$(MODEL)") && ref=$$($(MODELS_CLI) --reference "$(MODEL)") && \
	  $(MAKE) --no-print-directory "$@" BASE_MODEL="$$base" REF_MODEL="$$ref"
else
$(CKPT): | $(call base_ckpt,$(BASE_MODEL)) $(if $(REF_MODEL),$(call base_ckpt,$(REF_MODEL))) $(STAMP)
	@$(call needs_torch,$@: training)"$(PY)" -m tempseg.train --model "$(MODEL)" --preset "$(PRESET)"$(DATA_OPT) --stage finetune --init-from "$(call base_ckpt,$(BASE_MODEL))" $(if $(REF_MODEL),--reference-from "$(call base_ckpt,$(REF_MODEL))") --out-dir "$(RUN_DIR)" $(TRAIN_ARGS)
	@printf '%s\n' "$(DATA)" > "$(RUN_DIR)/data.spec"
endif

# $(call check_size,NAME,VALUE): stop make (one line, exit 2) unless VALUE is a positive multiple of 32, the
# network's stride (tempseg/models/fcresnet.py check_input_size). Make checks for digits first: only digits reach expr.
digitless  = $(subst 0,,$(subst 1,,$(subst 2,,$(subst 3,,$(subst 4,,$(subst 5,,$(subst 6,,$(subst 7,,$(subst 8,,$(subst 9,,$(1)))))))))))
size_ok    = $(and $(filter 1,$(words $(1))),$(if $(call digitless,$(1)),,yes),$(filter 1,$(shell expr $(1) % 32 = 0 \& $(1) \> 0)))
check_size = $(if $(call size_ok,$(2)),,$(error $(1)=$(2) is not an input size the network takes: a positive multiple of 32 (the stride), such as 256 or 512))

# Rewritten only when the size changes, so a new HEIGHT/WIDTH re-exports and nothing else does. The size is
# checked before anything is written: a size the export would refuse must not mark good graphs stale.
$(GRAPH_DIR)/export.args: FORCE $(if $(DATA_CHECK),| $(STAMP))
	@$(call check_size,HEIGHT,$(HEIGHT))$(call check_size,WIDTH,$(WIDTH))$(DATA_CHECK)mkdir -p "$(GRAPH_DIR)"
	@echo "$(HEIGHT)x$(WIDTH) batch $(BATCH)" | cmp -s - "$@" || echo "$(HEIGHT)x$(WIDTH) batch $(BATCH)" > "$@"

# export.args first: make takes prerequisites in order, so a bad size stops make before any training.
$(ONNX_FP32) $(ONNX_FP16) &: $(if $(DEPLOYED),,$(GRAPH_DIR)/export.args $(CKPT)) | $(STAMP)
	@$(call needs_torch,$@: export)"$(PY)" -m tempseg.export --model "$(MODEL)" --checkpoint "$(CKPT)" --height "$(HEIGHT)" --width "$(WIDTH)" --batch "$(BATCH)" --out-dir "$(GRAPH_DIR)"

# Deployed: the FP32 graph need only exist (order-only), so a copy that left it newer does not recalibrate.
$(ONNX_INT8): $(if $(DEPLOYED),,$(ONNX_FP32)) | $(if $(DEPLOYED),$(ONNX_FP32)) $(STAMP)
	@"$(PY)" -m tempseg.calibration --onnx "$(ONNX_FP32)"$(DATA_OPT) --frames "$(CALIB_FRAMES)" --method "$(CALIB_METHOD)" $(CALIB_ARGS)

.SECONDEXPANSION:
$(GRAPH_DIR)/%.engine: $$(GRAPH_$$*) | $(STAMP)
	@"$(PY)" -m tempseg.engine --onnx "$<" --out "$@" $(ENGINE_ARGS)

train: $(CKPT)
export: $(ONNX_FP32) $(ONNX_FP16)
calibrate: $(ONNX_INT8)
engine: $(ENGINE)

# `make run` runs the engine when asked for (BACKEND=tensorrt|tensorrt_rtx), or when BACKEND=auto and
# tempseg/common/platform.py says auto runs one here (a TensorRT flavour that imports and runs on this GPU, and a CUDA
# binding): the runtime's `auto` asks the same function. Asked in the recipe, once .venv exists; a sub-make
# then builds the engine. ONNX Runtime on the graph otherwise.
RUN_ENGINE := $(if $(filter tensorrt tensorrt_rtx,$(BACKEND)),$(ENGINE))
# --source per word of SOURCES (each quoted), or the one SOURCE
RUN_SOURCES = $(if $(strip $(SOURCES)),$(foreach source,$(SOURCES),--source "$(source)"),--source "$(SOURCE)")

run: $(GRAPH_$(PRECISION)) $(RUN_ENGINE) | $(STAMP)
ifeq ($(BACKEND),auto)
	@backend=$$("$(PY)" -m tempseg.common.platform auto-backend) && if [ "$$backend" != onnxruntime ]; then \
	  echo "backend auto -> $$backend: make engine"; $(MAKE) --no-print-directory engine; fi
endif
	@"$(PY)" -m tempseg.runtime --model-dir "$(GRAPH_DIR)" --precision "$(PRECISION)" --backend "$(BACKEND)" $(RUN_SOURCES) --frames "$(FRAMES)" $(RUN_ARGS)

# `make demo MODEL=a MODEL2=b`: the same degraded clip through both, side by side, in one video
# ($(RUNS)/demo-a-vs-b.mp4; tempseg/runtime/demo.py). MODEL's graph is made as for `run`; MODEL2's by a sub-make
# with MODEL=$(MODEL2). Engines are not built here: BACKEND=auto runs ONNX Runtime where one is missing.
MODEL2     ?=
DEMO_ARGS  ?=
ifneq ($(filter demo,$(MAKECMDGOALS)),)
ifeq ($(strip $(MODEL2)),)
$(error make demo: give the second model, MODEL2=... (a run directory under $(RUNS)/))
endif
endif

demo: $(GRAPH_$(PRECISION)) | $(STAMP)
	@$(MAKE) --no-print-directory MODEL="$(MODEL2)" "$(RUNS)/$(MODEL2)/$(notdir $(GRAPH_$(PRECISION)))"
	@"$(PY)" -m tempseg.runtime.demo --model-dir "$(RUN_DIR)" --model-dir2 "$(RUNS)/$(MODEL2)" --precision "$(PRECISION)" --backend "$(BACKEND)" --source "$(SOURCE)" --frames "$(FRAMES)" $(DEMO_ARGS)

# compare trains its own rows (runs/compare-PRESET) with one recipe, PRESET=compare unless given.
COMPARE_PRESET := $(if $(filter command line,$(origin PRESET)),$(PRESET),compare)
COMPARE_RUNS   := $(if $(filter command line,$(origin RUNS)),--runs "$(RUNS)")

# compare trains, calibrates and scores every row on DATA (synthetic val, or a labelled data set's val split; bases
# named as base_ckpt names them): --data where DATA is not synthetic, so the synthetic command line is as before.
compare: | $(STAMP)
	@"$(PY)" -m bench.compare --models $(MODELS) --precisions $(PRECISIONS) --backend "$(BACKEND)" --height "$(HEIGHT)" --width "$(WIDTH)" --preset "$(COMPARE_PRESET)"$(DATA_OPT) $(COMPARE_RUNS) $(if $(filter 1,$(FORCE)),--force)

paper: | $(STAMP)
	@"$(PY)" -m bench.paper

bench: | $(STAMP)
	@"$(PY)" -m bench.runtime_ratios

soak: | $(STAMP)
	@"$(PY)" -m bench.soak

# docs/results/*.md, docs/cli.md and README.md's headline table, generated from bench/results and the CLIs' parsers.
docs: | $(STAMP)
	@"$(PY)" -m bench.docs

# On an NVIDIA machine, what CI cannot run (bench/gpu_check.py; a few minutes, nothing downloaded): the venv's
# Python where there is one, else the system Python (a GPU machine given the repository alone, with torch there).
.PHONY: gpu-check
gpu-check:
	@"$(if $(wildcard $(PY)),$(PY),$(PYTHON))" -m bench.gpu_check

# ---- quality -------------------------------------------------------------------------------
# ruff; vermin (the runtime runs on JetPack 6's Python 3.10); basedpyright resolves every import and checks types
# (pyproject.toml); import-linter holds the layers (pyproject.toml's contracts; bench/ is found from the root).
lint: | $(STAMP)
	"$(PY)" -m ruff check .
	"$(PY)" -m ruff format --check .
	"$(VENV)/bin/vermin" -q --no-tips --violations -t=3.10- tempseg
	"$(VENV)/bin/basedpyright"
	PYTHONPATH=. "$(VENV)/bin/lint-imports" --no-cache

format: | $(STAMP)
	"$(PY)" -m ruff format .
	"$(PY)" -m ruff check --fix .

test: lint
	"$(PY)" -m pytest

clean:
	rm -rf runs

FORCE:
