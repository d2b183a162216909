"""Updates per second of `training_step` on one device, eager and compiled, config by config.

    python benchmarks/gpu_step.py [--device cuda] [--configs tiny_mtsac tiny_picor ...]
                                  [--modes eager default reduce-overhead] [--updates 200]
                                  [--warmup 20] [--learner MultiTaskLearner] [--budget_s 0]

For each gin config it builds the experiment as benchmarks/throughput.py does (its `_build`),
warms the replay up, samples `--warmup + --updates` batches once (on the device: on CUDA the
replay lives there, `MultiTaskData.replay_device = 'cuda'`; an on-policy config, such as
tiny_picor_ppo, takes the minibatches of fresh rollouts instead), and times Lightning's
`training_step` on those same batches for each compile mode, every mode starting from the same
initial parameters: `eager` (no binding), `default` and `reduce-overhead` (CUDA graphs), bound as
`<learner>.compile_mode = '<mode>'`. Compilation happens in the `--warmup` untimed updates. On
CUDA every timed update is bracketed by `torch.cuda.synchronize()`, so the figure is the GPU's
work and not only its queueing.

`--learner` is the LightningModule's gin name (default: $LEARNER, else MultiTaskLearner).
`--budget_s` (0: none) stops starting new cells once that many seconds have passed; the cells
left are reported as not run. Each cell's figure is printed as soon as it is measured, then the
whole table. Exit status 1 if a cell failed, else 0.
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = ["tiny_mtsac", "tiny_picor", "tiny_picor_td3", "tiny_mtsac_pcgrad"]
MODES = ["eager", "default", "reduce-overhead"]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=MODES)
    parser.add_argument("--updates", type=int, default=200, help="timed updates per cell")
    parser.add_argument("--warmup", type=int, default=20, help="untimed updates before each cell (compilation)")
    parser.add_argument("--learner", default=os.environ.get("LEARNER", "MultiTaskLearner"),
                        help="gin name of the LightningModule, for <learner>.compile_mode")
    parser.add_argument("--gin_bindings", nargs="+", action="extend", default=[], help="'X.y = v' applied after each config")
    parser.add_argument("--budget_s", type=float, default=0.0, help="start no cell after this many seconds (0: no limit)")
    return parser.parse_args()


def main() -> int:
    args = _parse()
    # Imported after argparse so that --help works whatever the state of the package.
    sys.path.insert(0, str(REPO))
    import lightning as L
    import torch

    from benchmarks import throughput  # its _build and _Timer: the same experiment, the same timing

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance.*treespec.*LeafSpec.*")
    torch.set_flush_denormal(True)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 1

    class SyncedTimer(throughput._Timer):
        """throughput's timer, with the device's queue drained before and after each update."""

        def on_train_batch_start(self, *a) -> None:
            if cuda:
                torch.cuda.synchronize()
            super().on_train_batch_start(*a)

        def on_train_batch_end(self, *a) -> None:
            if cuda:
                torch.cuda.synchronize()
            super().on_train_batch_end(*a)

    def rate(module, batches) -> float:
        timer = SyncedTimer(skip=args.warmup)
        loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b)
        L.Trainer(
            max_epochs=1, accelerator="gpu" if cuda else "cpu", devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[timer],
        ).fit(module, train_dataloaders=loader)
        return timer.per_second

    def prepared_batches(data, count: int) -> list:
        """`count` update batches: replay samples after the warm-up, or (on-policy data) the
        minibatches of as many rollouts as it takes."""
        if not data.on_policy:
            data.warm_up()
            return [data.sample(data.sampler.tasks(i)) for i in range(count)]
        batches = []
        while len(batches) < count:
            data.collect()
            batches.extend(data.batches())
        return batches[:count]

    device_bindings = (
        ["Trainer.accelerator = 'gpu'", "Trainer.devices = 1", "MultiTaskData.replay_device = 'cuda'"]
        if cuda else ["Trainer.accelerator = 'cpu'", "Trainer.devices = 1"]
    )
    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {where}; {args.updates} timed updates "
          f"per cell after {args.warmup} untimed; compile mode bound as {args.learner}.compile_mode", flush=True)

    started = time.monotonic()
    cells: dict[tuple[str, str], str] = {}
    failed = False
    for config in args.configs:
        bindings = [*device_bindings, *args.gin_bindings]
        try:
            built = throughput._build(config, bindings)
            data, eager = built.data, built.module
            initial = copy.deepcopy(eager.state_dict())
            batches = prepared_batches(data, args.warmup + args.updates)
        except Exception as error:  # noqa: BLE001  (reported in the table; the other configs still run)
            traceback.print_exc()
            message = f"error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            print(f"{config:<20} build failed: {message}", flush=True)
            cells.update({(config, mode): "build failed" for mode in args.modes})
            failed = True
            continue
        for mode in args.modes:
            if args.budget_s and time.monotonic() - started > args.budget_s:
                cells[(config, mode)] = "not run (budget)"
                print(f"{config:<20} {mode:<16} not run: {args.budget_s:.0f} s budget spent", flush=True)
                continue
            cell_started = time.monotonic()
            try:
                if mode == "eager":
                    module = eager
                else:
                    module = throughput._build(config, [*bindings, f"{args.learner}.compile_mode = '{mode}'"]).module
                module.load_state_dict(initial)
                figure = rate(module, batches)
                cells[(config, mode)] = f"{figure:.1f}"
                print(f"{config:<20} {mode:<16} {figure:8.1f} updates/s  "
                      f"(cell took {time.monotonic() - cell_started:.0f} s)", flush=True)
            except Exception as error:  # noqa: BLE001
                traceback.print_exc()
                first = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
                cells[(config, mode)] = f"FAILED ({type(error).__name__})"
                print(f"{config:<20} {mode:<16} FAILED: {type(error).__name__}: {first}", flush=True)
                failed = True
            finally:
                if cuda:
                    torch.cuda.empty_cache()

    def ratio(config: str, mode: str) -> str:
        try:
            return f"{float(cells[(config, mode)]) / float(cells[(config, 'eager')]):.2f}"
        except (KeyError, ValueError, ZeroDivisionError):
            return "-"

    compiled = [m for m in args.modes if m != "eager"]
    columns = [f"{m} (updates/s)" for m in args.modes]
    if "eager" in args.modes:
        columns += [f"{m} / eager" for m in compiled]
    print("\n| config | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for config in args.configs:
        row = [cells.get((config, m), "-") for m in args.modes]
        if "eager" in args.modes:
            row += [ratio(config, m) for m in compiled]
        print(f"| {config} | " + " | ".join(row) + " |")
    print(f"\n({time.monotonic() - started:.0f} s in all)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
