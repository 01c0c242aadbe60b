"""megatron-sicog: SICOG self-improving multimodal training on megatron-core.

Layout: `runtime` (the only module that knows the machine), `mcore_compat` (every
megatron-core internal the package uses; `mcore_import` defers megatron-core's
import-time torch.compile), `guards` (what every tool checks before it works),
`model/` (LLaVA-style model on megatron-core), `prompts` (CoD / CoT formats shared
by generation, curation and the converter), `records` (the record formats and the
one error-record shape), `io` (records in, atomic files out), `data/` (tokenizer,
chat templates, the mmap indexed format, length fitting), `training/` (the trainer
behind pretrain_sicog.py, its objectives), `generation/` (candidate sampling),
`curation/` (self-consistency voting), `conversion/` (HF <-> megatron
checkpoints), `evaluation/` (scoring, benchmarks), `recipe/` (the SICOG round as a
stage graph and its local and sbatch runners). The tiny demo: `synthetic/` (its
generated world), `demo_base` (its shipped pretrained base), `loop` (its round as a
graph, run and read back) and `loop_report` (its analysis and report).
"""

__version__ = "0.1.0"

from megatron_sicog import mcore_import as _mcore_import

_mcore_import.install()  # megatron-core's torch.compile decorators compile on first call, not at import
