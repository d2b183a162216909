"""The LightningModule: one multi-task update per `training_step` (manual optimization).

    1. optimization phase: the objective's loss terms on the sampled batch (the backbone's own,
       or a method's such as KTM-DRL's), made into a gradient by the gradient surgery (the mean
       loss, or a TorchJD aggregator over the tasks' gradients), one step of each optimizer;
    2. an optional correction of the actor after it (PiCor's: `picor_gin/correction/`).

Every method is components bound in gin on this one class: MTSAC is SAC without a correction,
PiCor is SAC with `MultiTaskLearner.correction = @PolicyCorrection`. This module names none of
the components' concrete variants beyond its defaults.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import gin
import lightning as L
import torch

from picor_gin.backbones import SAC, Backbone
from picor_gin.correction.policy_correction import PolicyCorrection, Processes
from picor_gin.data import Batch
from picor_gin.gradient_surgery import GradientSurgery, MeanLoss
from picor_gin.networks import Network
from picor_gin.objectives import BackboneLosses, Objective
from picor_gin.optimizers import OptimizerFactory, default_adam


@gin.configurable(denylist=["obs_dim", "action_dim", "num_tasks", "task_names", "log_every_updates"])
class MultiTaskLearner(L.LightningModule):
    """A multi-task learner on any backbone, with an optional correction after each update.

    Args:
        obs_dim, action_dim, num_tasks, task_names: supplied by the Experiment.
        log_every_updates: supplied by the Experiment (`Experiment.log_every_updates`).
        backbone: factory of the backbone, called with (obs_dim=, action_dim=, num_tasks=,
            network=).
        network: the network builder handed to the backbone (None: the backbone's default, the
            paper's `OneHotMLP()`). It is the learner's, not the backbone's, so that swapping
            the backbone keeps the network (MOORE's, PaCo's, ...).
        correction: None (no correction: MTSAC, MTTD3, the aggregator methods, KTM-DRL, PiCor's
            ablation "Cor X"), or a factory called with (backbone=): `@PolicyCorrection`, PiCor's
            eq. (9) weights and eq. (10) correction.
        actor_optimizer, critic_optimizer, alpha_optimizer: optimizer factories (gin:
            `@actor/Adam` etc.).
        compile_mode: None runs the update eagerly; a torch.compile mode ("default",
            "reduce-overhead" for CUDA graphs, "max-autotune") compiles the backbone's losses and
            the correction's loss (the optimizer steps stay eager; the correction's loss too
            under a solver that differentiates twice, such as TrustRegionProjection).
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
        network: Network | None = None,
        correction: Callable[..., PolicyCorrection] | None = None,
        actor_optimizer: OptimizerFactory = default_adam,
        critic_optimizer: OptimizerFactory = default_adam,
        alpha_optimizer: OptimizerFactory = default_adam,
        compile_mode: str | None = None,
        gradient_surgery: GradientSurgery | None = None,
        objective: Objective | None = None,
        log_every_updates: int = 100,
    ):
        super().__init__()
        if log_every_updates < 1:
            raise ValueError(f"log_every_updates must be >= 1, got {log_every_updates}")
        self.automatic_optimization = False
        self.num_tasks = num_tasks
        self.task_names = list(task_names)
        self.network = network  # the Experiment checks it against the task set's observations
        self.backbone = backbone(obs_dim=obs_dim, action_dim=action_dim, num_tasks=num_tasks, network=network)
        self.correction = None if correction is None else correction(backbone=self.backbone)
        self.gradient_surgery = gradient_surgery or MeanLoss()
        self.objective = objective or BackboneLosses()
        self.stage: str | None = None  # the stage of the last update
        self.optimizer_factories = {"actor": actor_optimizer, "critic": critic_optimizer, "alpha": alpha_optimizer}
        self.log_every_updates = log_every_updates
        self._losses = self.backbone.losses
        if compile_mode is not None:
            modes = torch._inductor.list_mode_options()
            if compile_mode not in modes:
                raise ValueError(
                    f"MultiTaskLearner.compile_mode must be None or one of {sorted(modes)}, got {compile_mode!r}"
                )
            self._losses = torch.compile(self._losses, mode=compile_mode)
            if self.correction is not None:
                self.correction.compile_loss(compile_mode)
        self.updates = 0
        self.process_checksums: list[float] = []

    @property
    def policy(self) -> torch.nn.Module:
        """The acting policy (reads "observation", writes "action") for collection and evaluation."""
        return self.backbone.policy

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """One optimizer per parameter group of the backbone, then the correction's (on the actor)."""
        groups = self.backbone.parameter_groups()
        optimizers = [self.optimizer_factories[name](params) for name, params in groups.items()]
        if self.correction is not None:
            optimizers.append(self.correction.optimizer_factory(groups["actor"]))
        return optimizers

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        phase_optimizers = optimizers[:-1] if self.correction is not None else optimizers
        if batch.stage != self.stage:
            if self.stage is not None:
                for optimizer in phase_optimizers:
                    optimizer.optimizer.state.clear()
            self.objective.start_stage(self.backbone, batch.stage)
            self.stage = batch.stage
        states = batch.correction
        if self.correction is not None:
            # pi_t: the actor *before* this update (PPO: the rollout's policy, read from the rollout);
            # the correction's advantage is pi_t's, not pi'_t's.
            pi_t = self.backbone.pi_t_snapshot(states)

        # 1. Optimization phase: the objective's terms, their gradient as the surgery forms it.
        for optimizer in phase_optimizers:
            optimizer.zero_grad()
        groups = self.backbone.parameter_groups()
        self.backbone.start_update(batch.tasks)
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
        self.objective.after_step(self.backbone)

        # 2. The correction of the actor, from pi'_t (PiCor: eq. 9 weights, eq. 10).
        correction: dict[str, torch.Tensor] = {}
        if self.correction is not None:
            processes = Processes(self.manual_backward, self._any_process, self._mean_over_processes)
            recent_return = batch.recent_return
            if self._distributed():
                recent_return = mean_over_processes_that_have_it(recent_return, self._sum_over_processes)
            correction = self.correction.correct(
                self.backbone, states, pi_t, recent_return, optimizers[-1], processes, logging_now
            )

        self.updates += 1
        if logging_now:
            self._log_training(batch, losses, correction)

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

    def _sum_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    def _log_training(self, batch: Batch, losses: dict[str, torch.Tensor], correction: dict[str, torch.Tensor]) -> None:
        """Writes train/ metrics against global env steps; fails loudly on a non-finite value."""
        terms = {**losses, **correction}
        per_task = {k: v for k, v in terms.items() if v.ndim == 1}  # the weights, an aggregator's task weights
        metrics = {f"train/{k}": v.item() for k, v in terms.items() if k not in per_task}
        if self.correction is not None:
            metrics["train/constraint_active_share"] = self.correction.active_share()
        per_task.update(self.backbone.task_stats())
        observation = batch.correction["observation"]  # [N, M, D]: M states of each task
        snapshot = self.backbone.policy_snapshot(observation)
        if "log_prob" in snapshot.keys():
            per_task["entropy"] = -snapshot["log_prob"].mean(-1)
        estimates = self.backbone.critic_estimates(observation, snapshot)
        per_task.update({stat: values.mean(-1) for stat, values in estimates.items()})
        for stat, values in per_task.items():
            for name, value in zip(self.task_names, values.tolist()):
                metrics[f"train/{stat}/{name}"] = value
        non_finite = [f"non-finite {key} = {value}" for key, value in metrics.items() if not math.isfinite(value)]
        all_finite = not non_finite
        if self._distributed():  # every process stops alike: one alone would leave the rest in an all-reduce
            all_finite = self.trainer.strategy.reduce_boolean_decision(all_finite, all=True)
        if not all_finite:
            task = self.task_names[int(batch.task["task_id"][0])]
            what = non_finite[0] if non_finite else "a non-finite value on another process"
            raise FloatingPointError(f"{what} at env step {batch.env_steps} (update {self.updates}, training task {task})")
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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning restores the optimizers after this hook, settings (lr, betas, ...) included:
        # the config's settings go into the saved states first, so that a resumed run runs what
        # its config.gin says (`--resume DIR --gin_bindings="critic/Adam.lr = 1e-4"`); Adam's
        # moments and step counts stay the checkpoint's.
        for saved, configured in zip(checkpoint.get("optimizer_states", []), self.configure_optimizers()):
            for saved_group, configured_group in zip(saved["param_groups"], configured.param_groups):
                saved_group.update({k: v for k, v in configured_group.items() if k != "params"})
        self.updates = checkpoint["updates"]
        self.stage = checkpoint.get("stage")
        self.gradient_surgery.load_state_dict(checkpoint.get("gradient_surgery", {}))
        if "torch_rng_state" in checkpoint:  # older checkpoints kept it here; the data path's now does
            torch.set_rng_state(checkpoint["torch_rng_state"])


def mean_over_processes_that_have_it(
    values: torch.Tensor, sum_over_processes: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Each entry's mean over the processes where it is not NaN (NaN where it is NaN on all).

    Under DDP each process keeps its own episodes' recent returns; this mean of the processes'
    means, each process counting once, gives every process the same correction weights.
    """
    known = ~values.isnan()
    totals = sum_over_processes(torch.stack([torch.where(known, values, 0.0), known.to(values.dtype)]))
    return totals[0] / totals[1]
