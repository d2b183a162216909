"""The LightningModule: one PiCor iteration per `training_step` (manual optimization).

    1. policy optimization phase: the backbone's losses on the sampled task's batch;
    2. adaptive task weights, eq. (9);
    3. policy correction phase, eq. (10), on states from every task's buffer.

With uniform weights and `correction_steps = 0` (the ablation "Ada X, Cor X") this is exactly
MTSAC with task-specific replay. Every component is injected; this module names none of their
concrete variants beyond its defaults.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterable

import gin
import lightning as L
import torch
from tensordict import TensorDictBase

from picor_gin.backbones import SAC, Backbone
from picor_gin.constraints import ConstraintForm, QuadraticPenalty
from picor_gin.correction import correction_diagnostics, correction_loss
from picor_gin.correction_solvers import CorrectionProblem, CorrectionSolver, PenaltyDescent, check_steps
from picor_gin.data import Batch
from picor_gin.gradient_surgery import GradientSurgery, MeanLoss
from picor_gin.objectives import BackboneLosses, Objective
from picor_gin.weighting import SoftmaxAlphaWeights, WeightingRule

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


def _adam(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=3e-4)


@gin.configurable(denylist=["obs_dim", "action_dim", "num_tasks", "task_names", "log_every_updates"])
class PiCor(L.LightningModule):
    """PiCor (Bai et al., AAAI 2023, Algorithm 1) on any backbone.

    Args:
        obs_dim, action_dim, num_tasks, task_names: supplied by the Experiment.
        log_every_updates: supplied by the Experiment (`Experiment.log_every_updates`).
        backbone: factory of the backbone, called with (obs_dim=, action_dim=, num_tasks=).
        weighting: the weighting rule of eq. (9) (or the uniform ablation).
        constraint: factory of the constraint form, called with (lam=, c=, gamma=).
        correction_solver: how the correction phase moves the actor (`@PenaltyDescent()`, the
            paper's optimizer steps on eq. 10, `@TrustRegionProjection()` or its cheap form
            `@ConstraintSizedStep()`); each returns pi'_t unchanged where it satisfies the
            constraint.
        lam: lambda >= 0 of eq. (10).
        c: c <= 0 of eq. (10); the constraint asks for a weighted gain >= c * (1 - gamma).
        correction_steps: steps of the correction phase per update; 0 skips the phase (the
            ablation "Cor X", as does the constraint form NoCorrection).
        actor_optimizer, critic_optimizer, alpha_optimizer, correction_optimizer: optimizer
            factories (gin: `@actor/Adam` etc.); the correction optimizer acts on the actor with
            its own state.
        compile_mode: None runs the update eagerly; a torch.compile mode ("default",
            "reduce-overhead" for CUDA graphs, "max-autotune") compiles the backbone's losses and
            the correction loss (the optimizer steps stay eager; the correction loss too under a
            solver that differentiates twice, such as TrustRegionProjection).
        gradient_surgery: how the optimization phase's losses become its gradient: None (or
            `@MeanLoss()`) the batch's mean loss; `@TorchJDAggregation()` combines the per-task
            gradients with a TorchJD aggregator (PCGrad, CAGrad, Nash-MTL, UPGrad, ...; needs
            batches with several tasks: the AllTasks sampler).
        objective: what the optimization phase minimises, stage by stage: None (or
            `@BackboneLosses()`) the backbone's losses; `@KTMDRL()` adds its teachers' terms and
            its offline stage. Each stage starts with fresh optimizer state (what Adam learnt of
            one stage's loss scales says nothing of the next's; KTM-DRL's code does the same).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_tasks: int,
        task_names: list[str],
        backbone: Callable[..., Backbone] = SAC,
        weighting: WeightingRule | None = None,
        constraint: Callable[..., ConstraintForm] = QuadraticPenalty,
        correction_solver: CorrectionSolver | None = None,
        lam: float = 1.0,
        c: float = -0.01,
        correction_steps: int = 1,
        actor_optimizer: OptimizerFactory = _adam,
        critic_optimizer: OptimizerFactory = _adam,
        alpha_optimizer: OptimizerFactory = _adam,
        correction_optimizer: OptimizerFactory = _adam,
        compile_mode: str | None = None,
        gradient_surgery: GradientSurgery | None = None,
        objective: Objective | None = None,
        log_every_updates: int = 100,
    ):
        super().__init__()
        if correction_steps < 0:
            raise ValueError(f"PiCor.correction_steps must be >= 0, got {correction_steps}")
        if log_every_updates < 1:
            raise ValueError(f"log_every_updates must be >= 1, got {log_every_updates}")
        self.automatic_optimization = False
        self.num_tasks = num_tasks
        self.task_names = list(task_names)
        self.backbone = backbone(obs_dim=obs_dim, action_dim=action_dim, num_tasks=num_tasks)
        self.weighting = weighting or SoftmaxAlphaWeights()
        missing = self.weighting.requires - self.backbone.task_stat_names - {"recent_return"}
        if missing:
            raise ValueError(
                f"{type(self.weighting).__name__} needs per-task {sorted(missing)}, which "
                f"{type(self.backbone).__name__} does not provide; bind a rule that needs no "
                "temperature, e.g. PiCor.weighting = @SoftmaxReturnWeights()"
            )
        self.constraint = constraint(lam=lam, c=c, gamma=self.backbone.gamma)
        self.correction_steps = correction_steps
        self.correction_solver = correction_solver or PenaltyDescent()
        check_steps(self.correction_solver, correction_steps)
        self.gradient_surgery = gradient_surgery or MeanLoss()
        self.objective = objective or BackboneLosses()
        self.stage: str | None = None  # the stage of the last update
        self.optimizer_factories = {
            "actor": actor_optimizer,
            "critic": critic_optimizer,
            "alpha": alpha_optimizer,
            "correction": correction_optimizer,
        }
        self.log_every_updates = log_every_updates
        self._losses, self._correction_loss = self.backbone.losses, correction_loss
        if compile_mode is not None:
            modes = torch._inductor.list_mode_options()
            if compile_mode not in modes:
                raise ValueError(f"PiCor.compile_mode must be None or one of {sorted(modes)}, got {compile_mode!r}")
            self._losses = torch.compile(self._losses, mode=compile_mode)
            if not self.correction_solver.differentiates_twice:
                self._correction_loss = torch.compile(self._correction_loss, mode=compile_mode)
        self.updates = 0
        self.process_checksums: list[float] = []
        # Share of updates whose correction constraint was active, accumulated on the device.
        self.register_buffer("_active_updates", torch.zeros(()), persistent=False)

    @property
    def policy(self) -> torch.nn.Module:
        """The acting policy (reads "observation", writes "action") for collection and evaluation."""
        return self.backbone.policy

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        groups = self.backbone.parameter_groups()
        optimizers = [self.optimizer_factories[name](params) for name, params in groups.items()]
        optimizers.append(self.optimizer_factories["correction"](groups["actor"]))
        return optimizers

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        *phase_optimizers, correction_optimizer = self.optimizers()
        if batch.stage != self.stage:
            if self.stage is not None:
                for optimizer in phase_optimizers:
                    optimizer.optimizer.state.clear()
            self.objective.start_stage(self.backbone, batch.stage)
            self.stage = batch.stage
        states = batch.correction
        correcting = self.correction_steps > 0 and self.constraint.corrects
        if correcting:
            # pi_t: the actor *before* this update; A^{pi_t} is its advantage, not pi'_t's.
            pi_t = self.backbone.policy_snapshot(states["observation"])

        # 1. Policy optimization phase on the sampled task's batch: the objective's terms, their
        # gradient as the surgery forms it.
        for optimizer in phase_optimizers:
            optimizer.zero_grad()
        groups = self.backbone.parameter_groups()
        objective = functools.partial(self.objective.losses, self.backbone, self._losses, batch.stage)
        losses = self.gradient_surgery.backward(objective, batch, groups, self.manual_backward, self.num_tasks)
        logging_now = (self.updates + 1) % self.log_every_updates == 0
        if logging_now:
            for group, params in groups.items():
                grads = [p.grad for p in params if p.grad is not None]
                if grads:  # a delayed actor update leaves the actor without gradient
                    losses[f"grad_norm_{group}"] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        for optimizer in phase_optimizers:
            optimizer.step()
        self.backbone.update_targets()

        # 2. Adaptive weights, eq. (9).
        task_stats = {**self.backbone.task_stats(), "recent_return": batch.recent_return}
        weights = self.weighting(task_stats, self.num_tasks)

        # 3. Policy correction phase, eq. (10), starting from phi = pi'_t.
        correction: dict[str, torch.Tensor] = {}
        if correcting:
            baseline = self.backbone.value_baseline(states["observation"], states["task_id"], pi_t)
            problem = self._correction_problem(states, baseline, weights, correction_optimizer, pi_t.get("noise", None))
            if logging_now:
                problem.snapshot()  # pi'_t, kept for the "after" diagnostics below
            terms, moved = self.correction_solver.solve(problem, self.correction_steps)
            correction = correction_diagnostics(terms, self.constraint, weights)
            self._active_updates += moved

        self.updates += 1
        if logging_now:
            if correcting:
                # Where the phase left the policy (before it, the KL to pi'_t is 0).
                with torch.no_grad():
                    after = problem.loss(problem.snapshot())
                correction.update({f"{k}_after": v for k, v in correction_diagnostics(after, self.constraint, weights).items()})
                correction.update(self.constraint.diagnostics())
            self._log_training(batch, losses, correction, weights)

    def _correction_problem(
        self,
        states: TensorDictBase,
        baseline: torch.Tensor,
        weights: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        noise: torch.Tensor | None,
    ) -> CorrectionProblem:
        """Eq. (10) on this update's correction states, for the correction solver."""
        # Taken on first use, which is at pi'_t: only multi-step solvers and logging need it.
        snapshot = functools.cache(lambda: self.backbone.policy_snapshot(states["observation"]))
        return CorrectionProblem(
            loss=lambda reference: self._correction_loss(
                self.backbone, self.constraint, states, baseline, reference, weights, noise
            ),
            snapshot=snapshot,
            kl=lambda reference: self.backbone.divergence(states["observation"], reference).mean(),
            params=self.backbone.parameter_groups()["actor"],
            constraint=self.constraint,
            weights=weights,
            optimizer=optimizer,
            backward=self.manual_backward,
            any_process=self._any_process,
            mean_over_processes=self._mean_over_processes,
        )

    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def _any_process(self, flag: torch.Tensor) -> bool:
        """Whether `flag` is set on any process; the one host sync of the correction phase."""
        flag = flag.float()
        if self._distributed():
            flag = self.trainer.strategy.reduce(flag, reduce_op="sum")
        return bool(flag > 0)

    def _mean_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(tensor, reduce_op="mean") if self._distributed() else tensor

    def _log_training(
        self,
        batch: Batch,
        losses: dict[str, torch.Tensor],
        correction: dict[str, torch.Tensor],
        weights: torch.Tensor,
    ) -> None:
        """Writes train/ metrics against global env steps; fails loudly on a non-finite value."""
        per_task = {k: v for k, v in losses.items() if v.ndim == 1}  # e.g. an aggregator's task weights
        metrics = {f"train/{k}": v.item() for k, v in {**losses, **correction}.items() if k not in per_task}
        if correction:
            metrics["train/constraint_active_share"] = self._active_updates.item() / self.log_every_updates
            self._active_updates.zero_()
        per_task.update({"weight": weights, **self.backbone.task_stats()})
        snapshot = self.backbone.policy_snapshot(batch.correction["observation"])
        if "log_prob" in snapshot.keys():
            per_task["entropy"] = -snapshot["log_prob"].mean(-1)
        for stat, values in per_task.items():
            for name, value in zip(self.task_names, values.tolist()):
                metrics[f"train/{stat}/{name}"] = value
        for key, value in metrics.items():
            if not math.isfinite(value):
                task = self.task_names[int(batch.task["task_id"][0])]
                raise FloatingPointError(
                    f"non-finite {key} = {value} at env step {batch.env_steps} "
                    f"(update {self.updates}, training task {task})"
                )
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=batch.env_steps)

    def on_train_end(self) -> None:
        """Checks that every process ends with the same parameters: DDP must have averaged the
        gradients of both phases (the correction's backward included) on every update."""
        checksum = torch.stack([p.detach().double().sum() for p in self.parameters()]).sum()
        self.process_checksums = self.all_gather(checksum).flatten().tolist()
        if len(set(self.process_checksums)) > 1:
            raise RuntimeError(
                f"processes ended with different parameters (checksums {self.process_checksums}): "
                "some update's gradients were not all-reduced"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["updates"] = self.updates
        checkpoint["stage"] = self.stage
        checkpoint["task_names"] = self.task_names  # what a KTM-DRL student checks its teachers by
        checkpoint["gradient_surgery"] = self.gradient_surgery.state_dict()
        # Sampling noise continues where it stopped (per process: DDP ranks differ).
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.updates = checkpoint["updates"]
        self.stage = checkpoint.get("stage")
        self.gradient_surgery.load_state_dict(checkpoint.get("gradient_surgery", {}))
        torch.set_rng_state(checkpoint["torch_rng_state"])
        cuda_states = checkpoint.get("cuda_rng_state", [])
        if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
