"""The trainer every SICOG stage runs: pretrain (alignment / re-pretraining), SFT, DPO.

The constructor reads as the recipe: distributed init, config checks,
tokenizer, model, the objective's extra models (DPO: a frozen reference),
megatron DDP, optimizer, LR schedule, data, checkpoint restore, signal
handlers. What a stage optimises — dataset, collation, forward step, loss
keys, rows per sample — is its `training.objectives` object. `train()` is the loop:
megatron-core's forward-backward schedule (1F1B with PP > 1), optimizer step,
scheduler step, metrics, periodic eval and checkpoints.

SIGTERM / SIGUSR1 (SLURM's ``--signal=USR1@N`` pre-emption warning) set a
flag; at the next iteration boundary all ranks agree on it, save a checkpoint
and exit with code 0, and ``--load`` of the same directory resumes the exact
sample sequence (``--exit-signal-handler``, on by default;
``--no-exit-signal-handler`` leaves the signals their default action).
"""
from __future__ import annotations

import logging
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.distributed import finalize_model_grads
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_sicog import runtime
from megatron_sicog.guards import UsageError
from megatron_sicog.model import sharding
from megatron_sicog.model.batch import collate
from megatron_sicog.model.llava import SicogModel, build_model
from megatron_sicog.model.presets import ModelArgs, flag_conflicts, model_args_from_flags, validate
from megatron_sicog.training import checkpointing as ckpt
from megatron_sicog.training.arguments import packing_problem, parse_args, validate_args
from megatron_sicog.data.sampler import ResumableDataLoader
from megatron_sicog.training.metrics import MetricsLogger
from megatron_sicog.training.objectives import build_objective
from megatron_sicog.training.optim import (build_optimizer, build_scheduler, params_dtype, schedule_changes,
                                           wrap_model)

log = logging.getLogger("sicog.train")


def unwrap(model) -> SicogModel:
    while not isinstance(model, SicogModel):
        model = model.module
    return model


class Trainer:
    args: object
    model_args: ModelArgs
    model: list  # megatron DDP-wrapped chunks (one per rank: no virtual pipeline)
    objective: object  # training.objectives.LMObjective | DPOObjective
    iteration: int
    train_data: ResumableDataLoader

    def __init__(self, args):
        self.args = args
        self.env = runtime.init_distributed(args.tensor_model_parallel_size, args.pipeline_model_parallel_size,
                                            seed=args.seed)
        self.dp_size = validate_args(args, self.env.world_size)
        self.num_microbatches = args.global_batch_size // (args.micro_batch_size * self.dp_size)
        self._check_load_dir()
        args.chat_template = self._chat_template()
        ckpt.allow_pickle(args.allow_pickle)
        self.tokenizer = self._build_tokenizer()
        self.model_args = self._build_model_args()
        inner = build_model(self.model_args, params_dtype=params_dtype(args))
        problem = packing_problem(args.pack_sequences, sharding.implementation_of(inner.state_dict()))
        if problem:
            raise UsageError(problem)
        self.iteration, resume_state = self._load_weights(inner)
        self._hf_meta = ckpt.hf_record(self._start_checkpoint())
        self.objective = build_objective(args)
        self.objective.setup(inner, self.model_args, args)
        inner.freeze(vision=args.freeze_vision, projector=args.freeze_projector,
                     language=args.freeze_language_model)
        self.model = [wrap_model(inner, args)]
        self.optimizer = build_optimizer(self.model, args)
        self.scheduler = build_scheduler(self.optimizer, args)
        self.train_data, self.valid_dataset = self._build_data()
        self._restore_training_state(resume_state)
        self._configure_schedule()
        self.metrics = MetricsLogger(self._is_logging_rank(), args.log_json, args.tensorboard_dir,
                                     args.log_interval, args.loss_curve, self.iteration,
                                     loss_keys=self.objective.loss_keys)
        self._signal = None
        if args.exit_signal_handler:
            for sig in (signal.SIGTERM, signal.SIGUSR1):
                signal.signal(sig, self._on_signal)

    # -- construction ------------------------------------------------------
    def _build_tokenizer(self):
        if not self.args.tokenizer_model:
            return None
        from megatron_sicog.data.tokenizer import build_tokenizer

        return build_tokenizer(self.args.tokenizer_type, self.args.tokenizer_model)

    def _start_checkpoint(self) -> Optional[str]:
        """The checkpoint this run starts from: --load when it holds one (resume), else --pretrained-checkpoint."""
        a = self.args
        return a.load if a.load and ckpt.read_tracker(a.load) is not None else a.pretrained_checkpoint

    def _vision_source(self) -> Optional[str]:
        """The checkpoint the vision tower's weights came from (whose hf_extra.safetensors belongs to it)."""
        a = self.args
        if a.load and ckpt.read_tracker(a.load) is not None:
            return a.load
        return a.pretrained_vision_checkpoint or a.pretrained_checkpoint

    def _chat_template(self) -> str:
        """--chat-template, else the starting checkpoint's recorded template, else qwen2 (what saves record)."""
        source = self._start_checkpoint()
        meta = ckpt.read_meta(source) if source else {}
        return ckpt.checkpoint_chat_template(self.args.chat_template, meta, source or "the checkpoint")

    def _build_model_args(self) -> ModelArgs:
        """The shape of the checkpoint we start from (resume or pretrained), else preset + flags."""
        a = self.args
        vocab = self.tokenizer.vocab_size if self.tokenizer else a.vocab_size
        img = self.tokenizer.image_token_id if self.tokenizer else None
        source = self._start_checkpoint()
        if source:
            m = ckpt.model_args_from_dict(ckpt.read_meta(source)["model_args"])
            if getattr(a, "transformer_impl", None):  # not a shape: either layer spec loads either checkpoint
                m = m.replace(transformer_impl=a.transformer_impl)
            conflicts = flag_conflicts(a, m)
            if conflicts:
                raise ValueError(f"the checkpoint {source} fixes the model's shape; these flags disagree with it: "
                                 + "; ".join(conflicts))
            if vocab is not None and vocab > m.language.vocab_size:
                raise ValueError(f"tokenizer has {vocab} tokens but the checkpoint {source} was built for "
                                 f"{m.language.vocab_size}")
            if img is not None and img != m.image_token_id:
                raise ValueError(f"tokenizer's <image> id {img} differs from the checkpoint's {m.image_token_id}")
        else:
            m = model_args_from_flags(a, vocab_size=vocab, image_token_id=img)
        validate(m, a.tensor_model_parallel_size, a.pipeline_model_parallel_size)
        return m

    def _check_load_dir(self) -> None:
        """--load holds a checkpoint, or nothing yet (a fresh run that saves there); saves a killed
        run left unfinished are removed."""
        a = self.args
        if a.save and dist.get_rank() == 0:
            ckpt.remove_stale_iterations(a.save)
        if not a.load or not Path(a.load).exists():
            return
        if not Path(a.load).is_dir():
            raise UsageError(f"--load {a.load} is not a directory")
        if ckpt.read_tracker(a.load) is None:
            other = sorted(p.name for p in Path(a.load).iterdir() if not p.name.startswith(".iter_"))
            if other:
                raise UsageError(f"--load {a.load} holds no {ckpt.TRACKER} but other files ({', '.join(other[:5])}):"
                                 " not a checkpoint directory (an empty or new directory starts a fresh run)")

    def _load_weights(self, inner: SicogModel):
        """Resume state from --load, else initial weights from --pretrained-checkpoint."""
        a = self.args
        if a.load and ckpt.read_tracker(a.load) is not None:
            meta = ckpt.read_meta(a.load)
            impl = sharding.implementation_of(inner.state_dict())
            same_layout = (meta["tensor_model_parallel_size"], meta["pipeline_model_parallel_size"],
                           meta.get("transformer_impl", "local")) == \
                (a.tensor_model_parallel_size, a.pipeline_model_parallel_size, impl)
            if same_layout:
                state = ckpt.load_rank_file(a.load, parallel_state.get_tensor_model_parallel_rank(),
                                            parallel_state.get_pipeline_model_parallel_rank())
                inner.load_state_dict(sharding.state_dict_for(inner, state["model"]), strict=True)
                log.info(f"resumed weights from {a.load} iteration {state['iteration']}")
                return int(state["iteration"]), state
            ckpt.load_model_weights(inner, a.load)
            log.warning(f"{a.load} was saved at TP={meta['tensor_model_parallel_size']} "
                        f"PP={meta['pipeline_model_parallel_size']} with {meta.get('transformer_impl', 'local')} "
                        f"layers (this run: {impl}): weights converted, optimizer state not restored")
            return int(meta["iteration"]), None
        if a.pretrained_checkpoint:
            ckpt.load_model_weights(inner, a.pretrained_checkpoint)
            log.info(f"initial weights from {a.pretrained_checkpoint}")
        if a.pretrained_vision_checkpoint:
            ckpt.load_vision_weights(inner, a.pretrained_vision_checkpoint)
            log.info(f"initial vision-encoder weights from {a.pretrained_vision_checkpoint}")
        return 0, None

    def _collate_fn(self):
        from megatron_sicog.data.image_processing import for_vision
        from megatron_sicog.data.tiling import tiling_for

        m = self.model_args
        pad = self.tokenizer.pad if self.tokenizer else 0
        return partial(collate, seq_length=self.args.seq_length, image_token_id=m.image_token_id,
                       num_image_tokens=m.vision.num_image_tokens, pad_id=pad,
                       image_transform=for_vision(m.vision), tiling=tiling_for(m.vision))

    def _build_data(self):
        a = self.args
        n_train = a.train_iters * a.global_batch_size
        n_valid = max(1, a.eval_iters) * a.global_batch_size
        train, valid = self.objective.datasets(a, self.model_args, self.tokenizer, n_train, n_valid)
        self._batch_fn = self.objective.collate(self._collate_fn())
        return self._loader(train), valid

    def _loader(self, dataset) -> ResumableDataLoader:
        return ResumableDataLoader(dataset, self.args.micro_batch_size, parallel_state.get_data_parallel_rank(),
                                   self.dp_size, num_workers=self.args.num_workers, collate_fn=self._batch_fn)

    def _restore_training_state(self, state: Optional[dict]) -> None:
        if state is None:
            if self.args.pretrained_checkpoint or self.args.pretrained_vision_checkpoint or self.iteration:
                self.optimizer.reload_model_params()  # fp32 main copies of freshly loaded weights
            return
        if "optimizer" in state:
            a = self.args
            changed = schedule_changes(self.scheduler, state["scheduler"])
            if changed and not (a.override_opt_param_scheduler or a.use_checkpoint_opt_param_scheduler):
                raise UsageError(
                    f"--load {a.load}: the LR schedule of these flags differs from the checkpoint's ("
                    + "; ".join(changed) + "): pass --override-opt_param-scheduler to follow the flags from "
                    f"iteration {self.iteration}, or --use-checkpoint-opt_param-scheduler to keep the checkpoint's")
            if changed:
                log.warning("LR schedule: " + ("following the flags" if a.override_opt_param_scheduler
                                               else "keeping the checkpoint's") + " (" + "; ".join(changed) + ")")
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.train_data.load_state_dict(state["data"])
            runtime.set_rng_state(state["rng"])
        else:
            self.optimizer.reload_model_params()

    def _configure_schedule(self) -> None:
        config = unwrap(self.model[0]).config
        config.finalize_model_grads_func = finalize_model_grads
        config.grad_scale_func = self.optimizer.scale_loss
        config.no_sync_func = self.model[0].no_sync
        self.forward_backward = get_forward_backward_func()
        self.loss_keys = self.objective.loss_keys

    def _is_logging_rank(self) -> bool:
        return (parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0
                and parallel_state.get_data_parallel_rank() == 0)

    # -- signals -------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self._signal = signum
        log.warning(f"received signal {signal.Signals(signum).name}: saving at the next iteration boundary")

    def _stop_requested(self) -> bool:
        flag = torch.tensor([1 if self._signal is not None else 0], dtype=torch.int32, device=runtime.device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    # -- steps -----------------------------------------------------------------
    def _reduce(self, losses: list[dict]) -> dict:
        """Average each metric over micro-batches and DP ranks; share it with every rank."""
        vals = torch.zeros(len(self.loss_keys), dtype=torch.float64, device=runtime.device())
        if losses:
            for i, k in enumerate(self.loss_keys):
                vals[i] = sum(float(d[k]) for d in losses) / len(losses)
        dist.all_reduce(vals, group=parallel_state.get_data_parallel_group())
        vals /= self.dp_size
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            dist.all_reduce(vals, group=parallel_state.get_pipeline_model_parallel_group())
        return {k: float(v) for k, v in zip(self.loss_keys, vals)}

    def _schedule(self, forward_step, data_iterator, model, num_microbatches: int, forward_only: bool):
        """One pass of megatron-core's schedule; model None: the policy chunks."""
        return self.forward_backward(
            forward_step_func=forward_step, data_iterator=data_iterator, model=model or self.model,
            num_microbatches=num_microbatches, seq_length=self.args.seq_length,
            micro_batch_size=self.args.micro_batch_size * self.objective.rows_per_sample,
            forward_only=forward_only)

    def _run_schedule(self, data_iterator, num_microbatches: int, forward_only: bool) -> list[dict]:
        with runtime.autocast_bf16(self.args.bf16_autocast):
            return self.objective.run(self._schedule, data_iterator, num_microbatches, forward_only)

    def train_step(self) -> dict:
        for m in self.model:
            m.train()
            m.zero_grad_buffer()
        self.optimizer.zero_grad()
        losses = self._run_schedule(self.train_data, self.num_microbatches, forward_only=False)
        ok, grad_norm, _ = self.optimizer.step()
        self.scheduler.step(increment=1)
        out = self._reduce(losses)
        out["grad_norm"] = float(grad_norm) if grad_norm is not None else 0.0
        out["skipped"] = not ok
        return out

    @torch.no_grad()
    def evaluate(self) -> dict:
        a = self.args
        for m in self.model:
            m.eval()
        losses = self._run_schedule(self._loader(self.valid_dataset), self.num_microbatches * a.eval_iters,
                                    forward_only=True)
        return self._reduce(losses)

    # -- checkpoints -----------------------------------------------------------
    def save(self) -> None:
        a = self.args
        if not a.save:
            return
        inner = unwrap(self.model[0])
        if parallel_state.get_data_parallel_rank() == 0:
            state = {
                "model": inner.state_dict(),
                "partition": sharding.partition_info(inner),
                "layer_offset": sharding.layer_offset(inner),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": runtime.rng_state(),
                "data": self.train_data.state_dict(),
                "iteration": self.iteration,
                "args": vars(a),
            }
            ckpt.save_rank_file(a.save, self.iteration, parallel_state.get_tensor_model_parallel_rank(),
                                parallel_state.get_pipeline_model_parallel_rank(),
                                a.pipeline_model_parallel_size, state)
        dist.barrier()
        if dist.get_rank() == 0:
            extra = {"stage": a.stage, "tokenizer_type": a.tokenizer_type, "tokenizer_model": a.tokenizer_model,
                     "chat_template": a.chat_template, "consumed_samples": self.train_data.consumed_samples,
                     **self._hf_meta}
            ckpt.carry_hf_extra(a.save, self._vision_source())  # what an export needs beyond these weights
            meta = ckpt.build_meta(self.model_args, a.tensor_model_parallel_size, a.pipeline_model_parallel_size,
                                   self.iteration, extra, transformer_impl=sharding.implementation_of(inner.state_dict()))
            ckpt.finalize_iteration(a.save, self.iteration, meta, keep_last=a.keep_last_checkpoints)
            log.info(f"saved checkpoint iteration {self.iteration} to {a.save}")
        dist.barrier()

    # -- the loop --------------------------------------------------------------
    def train(self) -> int:
        a = self.args
        tokens_per_iter = a.global_batch_size * a.seq_length * self.objective.rows_per_sample
        start_it, t_start = self.iteration, time.perf_counter()
        last_saved = self.iteration
        while self.iteration < a.train_iters:
            t0 = time.perf_counter()
            out = self.train_step()
            runtime.synchronize()
            dt = time.perf_counter() - t0
            self.iteration += 1
            rec = {"iteration": self.iteration, **{k: out[k] for k in self.loss_keys},
                   "lr": self.scheduler.get_lr(self.optimizer.param_groups[0]),
                   "grad_norm": out["grad_norm"], "tokens_per_sec": tokens_per_iter / dt,
                   "elapsed_ms": dt * 1000.0, "consumed_samples": self.train_data.consumed_samples}
            self.metrics.log(rec)
            if a.eval_interval and self.iteration % a.eval_interval == 0 and self.valid_dataset is not None:
                self.metrics.log_eval(self.iteration, self.evaluate())
            stop = self._stop_requested()
            exit_now = stop or (a.exit_interval and self.iteration % a.exit_interval == 0)
            if a.save and (exit_now or (a.save_interval and self.iteration % a.save_interval == 0)):
                self.save()
                last_saved = self.iteration
            if exit_now:
                why = f"signal {signal.Signals(self._signal).name}" if stop else f"--exit-interval {a.exit_interval}"
                log.info(f"exiting at iteration {self.iteration} ({why}) with a checkpoint in {a.save}")
                break
        if a.save and last_saved != self.iteration:
            self.save()
        secs = time.perf_counter() - t_start
        done = self.iteration - start_it
        if self.metrics.enabled and done:
            last = self.metrics.history[-1]
            key = self.loss_keys[0]
            log.info(f"done: {done} iterations ({start_it}->{self.iteration}) in {secs:.1f}s, "
                     f"{done * tokens_per_iter / secs:.0f} tokens/s, final {key} {last[key]:.5f}")
        self.metrics.close()
        return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    logging.getLogger("megatron").setLevel(logging.WARNING)  # its per-parameter listings drown the log
    args = parse_args(argv)
    trainer = Trainer(args)
    rc = trainer.train()
    runtime.destroy_distributed()
    return rc
