"""The run contract (docs/running.md): flags, run folder, exit codes.

Exit status 0: done; 2: bad input, which is anything that fails before the first update (one
line on stderr, no run folder left); 1: failure during the run (after a checkpoint of the last
good state).
"""
from __future__ import annotations

import argparse
import difflib
import inspect
import logging
import os
import re
import shutil
import sys
import traceback
import warnings
from pathlib import Path
from typing import NoReturn, Sequence

import gin
import torch

import picor_gin  # noqa: F401  (registers the configurables)
import picor_gin.run.binding_types  # noqa: F401  (registers the type check run when gin is finalized)
from picor_gin.checkpoint_files import CheckpointWriteError, UnreadableCheckpoint, data_state, resumable
from picor_gin.data import TaskEnvData
from picor_gin.run import externals
from picor_gin.run.callbacks import WarnAfterFirstUpdate
from picor_gin.run.experiment import Experiment, Run
from picor_gin.run.files import replace_text, run_folder_lock
from picor_gin.run.renamed import RENAMED, renamed_problem
from picor_gin.run.unused_bindings import unused_bindings

CONFIG_ROOT = Path(__file__).resolve().parents[2]  # the folder holding gin_configs/
RUN_DIR_VARIABLE = "PICOR_GIN_RUN_DIR"


class BadInput(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


class AlreadyFinished(Exception):
    """A --resume of a run that has reached its budget: reported in one line, exit status 0,
    and the run folder is left as it is (a fit would only rewrite it with an empty attempt)."""


# The line gin appends to an error for each configurable call it passes through.
GIN_CALL_TRAILER = re.compile(r"In call to configurable '([^']+)' \(.*\)(?: in scope '[^']*')?")


EVENT_FILES = "events.out.tfevents.*"  # TensorBoard's, one per attempt
GIN_LOCATION = re.compile(r'In (?:file "(?P<file>[^"]+)",|bindings string) line (?P<line>\d+)')
GIN_UNBOUND_MACRO = re.compile(r"No bindings specified for '([^'/]+)/gin\.macro' in config string:")


def _one_line(error: BaseException) -> str:
    """The error's message in one line, without gin's call trailers: they repeat for each
    configurable the error passed through, with class reprs. The innermost configurable is kept
    as a prefix where the message does not name it; gin's three-line location (line, text,
    caret) becomes one parenthesis naming the binding or the file's line."""
    if match := GIN_UNBOUND_MACRO.match(str(error)):  # gin appends the whole config after it
        return f"macro %{match[1]} is used but never bound: add '{match[1]} = ...' to a gin file or --gin_bindings"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    calls = [match[1] for line in lines if (match := GIN_CALL_TRAILER.fullmatch(line))]
    kept, where = [], ""
    remaining = iter(lines)
    for line in remaining:
        if location := GIN_LOCATION.fullmatch(line):
            text = next(remaining, "")  # the located line's text; its caret line is dropped below
            where = (f" (in {location['file']} line {location['line']}: {text})" if location["file"]
                     else f' (in --gin_bindings "{text}")')
        elif not (GIN_CALL_TRAILER.fullmatch(line) or line == "^"):
            kept.append(line)
    message = "; ".join(kept) or type(error).__name__
    if where:
        message = message.removesuffix(".") + where
    if calls and calls[0] not in message:
        return f"{calls[0]}: {message}"
    return message


def _failing_text(error: SyntaxError, bindings: Sequence[str]) -> str:
    """Where a gin syntax error is: the file and line, or the --gin_bindings value, which gin
    parses joined by newlines (its line number counts the lines of the bindings before it)."""
    if error.filename:
        return f"{error.filename} line {error.lineno} ({(error.text or '').strip()})"
    owners = [binding for binding in bindings for _ in binding.split("\n")]  # the binding of each joined line
    return f'--gin_bindings="{owners[error.lineno - 1]}"'


def _syntax_problem(error: SyntaxError, bindings: Sequence[str]) -> str:
    """A gin syntax error in one line naming the failing binding or file line, without the Python
    ast reprs gin's literal parser leaves in it; a bare name is most likely a missing quote or @."""
    lines = [line.strip() for line in str(error.msg).splitlines() if line.strip()]
    message = "; ".join(line for line in lines if not re.search(r"<[\w.]+ object at 0x[0-9a-f]+>", line))
    if token := re.fullmatch(r"Failed to parse token '([A-Za-z_][\w.]*)'", message):
        message += f"; write '{token[1]}' in quotes for a string, or @{token[1]} for a reference"
    return f"gin syntax error in {_failing_text(error, bindings)}: {message}"


def gin_problem(error: Exception, bindings: Sequence[str]) -> str:
    """gin's refusal of the config (or a configurable's, raised through gin) in one line; the
    sweeps refuse a grid in the same words."""
    if isinstance(error, SyntaxError):
        return _syntax_problem(error, bindings)
    return _did_you_mean(_one_line(error))


def _did_you_mean(message: str) -> str:
    """Appends the closest valid names to gin's unknown-configurable and unknown-parameter
    errors, and says who sets a parameter the framework keeps from gin."""
    if match := re.search(r"Configurable '([^']+)' has denylisted kwarg '([^']+)'", message):
        if (renamed := RENAMED.get(f"{match[1].split('.')[-1]}.{match[2]}")) is not None:
            return f"{message} (picor-gin renamed it: it is now {renamed})"
        if match[1] == "Trainer" and match[2] in externals.LOOP_ARGUMENTS:
            return f"{message} (picor-gin sets it itself: {externals.LOOP_ARGUMENTS[match[2]]})"
        return f"{message} (picor-gin sets it itself: docs/running.md)"
    registry = gin.config._REGISTRY  # gin has no public listing of its configurables
    if match := re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", message):
        configurable = registry.get_match(match[1])
        if configurable is None:
            return message
        denied = set(configurable.denylist or ())
        candidates = [p for p in inspect.signature(configurable.wrapped).parameters if p not in denied]
        name = match[2]
    elif match := re.search(r"No configurable matching (?:reference )?'@?([^'(]+)", message):
        candidates = sorted({c.name for _, c in registry.items() if not c.module.startswith("gin")})
        name = match[1].split("/")[-1]
    else:
        return message
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    if close:
        return f"{message} (did you mean {', '.join(close)}?)"
    return f"{message} (valid: {', '.join(candidates)})"


def _check_compatible(checkpoint: dict, checkpoint_path: Path, module: torch.nn.Module) -> None:
    """Refuses a checkpoint whose parameters do not fit the configured model, before any work."""
    saved, expected = checkpoint["state_dict"], module.state_dict()
    for name in sorted(set(saved) | set(expected)):
        if name not in saved or name not in expected:
            where = "the checkpoint" if name not in saved else "the configured model"
            raise BadInput(f"checkpoint {checkpoint_path} is incompatible with the config: {where} lacks {name}")
        if torch.is_tensor(expected[name]) and saved[name].shape != expected[name].shape:
            raise BadInput(
                f"checkpoint {checkpoint_path} is incompatible with the config: {name} has shape "
                f"{tuple(saved[name].shape)} in the checkpoint, {tuple(expected[name].shape)} configured"
            )


EPILOG = """\
--resume DIR reads DIR/config.gin, then applies any --gin_file and --gin_bindings on top:
  --resume DIR --gin_bindings="Experiment.total_env_steps = N" extends a finished run to N env steps;
  --resume DIR --gin_bindings="critic/Adam.lr = 1e-4" goes on at that rate, from the saved Adam state.

exit status:
  0  done (or a --resume of a finished run, with nothing to do)
  1  a failure or an interruption during the run; the checkpoints keep the last good state
  2  bad input: one line on stderr, no run folder left behind

Details: docs/running.md (the run contract, bad input, resuming)."""


class _OneLineParser(argparse.ArgumentParser):
    """Bad flags exit 2 with one `error:` line, as any other bad input does, not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line; its flags are a contract that sweeps and other tools write."""
    parser = _OneLineParser(
        description="Train a multi-task RL experiment from gin files.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the epilog's lines
    )
    parser.add_argument("--gin_file", action="append", default=[], help="gin file; repeatable, loaded in order")
    parser.add_argument("--gin_bindings", action="append", default=[], help="'X.y = v'; repeatable, applied last")
    parser.add_argument("--run_dir", type=Path, default=None, help="run folder (default runs/<name>/<time>-seed<seed>)")
    parser.add_argument("--resume", type=Path, default=None, metavar="DIR", help="continue the run in DIR")
    return parser.parse_args(argv)


def _resume_point(run_dir: Path) -> tuple[Path, dict]:
    """The newest readable checkpoint of the run in `run_dir`, saying so when it is not the last."""
    if not (run_dir / "config.gin").is_file():
        raise BadInput(f"--resume {run_dir}: no run folder with a config.gin there")
    try:
        path, checkpoint, note = resumable(run_dir / "checkpoints")
    except UnreadableCheckpoint as error:
        raise BadInput(f"--resume {run_dir}: {error}") from None
    if note is not None and os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"note: {note}", file=sys.stderr)
    return path, checkpoint


def _configure(args: argparse.Namespace) -> tuple[Experiment, Path, Path | None, dict | None]:
    """Parses gin and builds the Experiment; raises BadInput for anything the user can fix.

    Returns the experiment, its run folder and, when resuming, the checkpoint file and its
    content (checked against its digest, then memory-mapped: only parameter shapes and counters
    are read from it).
    """
    gin_files = list(args.gin_file)
    resume_from = checkpoint = None
    if args.resume is not None and args.run_dir is not None:
        raise BadInput(f"--resume {args.resume} continues the run in its own folder, so --run_dir does not go with it; "
                       f"to continue a copy, copy the folder and --resume the copy")
    if args.resume is not None:
        resume_from, checkpoint = _resume_point(args.resume)
        gin_files = [str(args.resume / "config.gin"), *gin_files]
    if not gin_files:
        raise BadInput("no --gin_file given (e.g. --gin_file=gin_configs/tiny_picor.gin)")
    for path in gin_files:
        found = Path(path) if Path(path).is_file() else CONFIG_ROOT / path
        if not found.is_file():
            raise BadInput(f"gin file not found: {path}")
        try:
            found.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise BadInput(f"gin file {path} is not UTF-8 text: byte {error.start} is {error.object[error.start]:#x}") from None
    gin.add_config_file_search_path(str(CONFIG_ROOT))
    logging.disable(logging.ERROR)  # gin logs a missing include before raising it: one line, not two
    try:
        # Finalizing runs binding_types' check of every literal against its parameter's type.
        gin.parse_config_files_and_bindings(gin_files, args.gin_bindings, skip_unknown=False)
        experiment = Experiment()
    except Exception as error:  # noqa: BLE001  (gin's parse and type errors, any configurable's check)
        renamed = renamed_problem(gin_files, args.gin_bindings, CONFIG_ROOT)
        raise BadInput(renamed or gin_problem(error, args.gin_bindings)) from error
    finally:
        logging.disable(logging.NOTSET)
    if RUN_DIR_VARIABLE in os.environ and os.environ.get("LOCAL_RANK", "0") != "0":
        # A DDP worker that Lightning started by re-running this command: the folder is rank 0's.
        return experiment, Path(os.environ[RUN_DIR_VARIABLE]), resume_from, checkpoint
    run_dir = args.resume or args.run_dir or experiment.default_run_dir()
    if args.resume is None and run_dir.exists():
        raise BadInput(f"run folder {run_dir} already exists; pass --resume {run_dir} to continue it")
    os.environ[RUN_DIR_VARIABLE] = str(run_dir)  # inherited by the DDP workers Lightning starts
    return experiment, run_dir, resume_from, checkpoint


def _finished(data: TaskEnvData, state: dict) -> bool:
    """Whether a checkpoint's data state has nothing left to do under the configured budget. Both
    streams stop once the env steps reach `total_env_steps`, after any offline stage:
    ReplayStream before collecting, RolloutStream before a fresh rollout, which is also where a
    resume restarts a rollout the checkpoint cut short."""
    return state["env_steps"] >= data.total_env_steps and state.get("offline_done", 0) >= data.offline_updates


def _build(args: argparse.Namespace) -> tuple[Experiment, Run, Path, Path | None]:
    """Everything before the run folder exists; any error here is the input's (BadInput), and a
    resumed run with nothing left to do raises AlreadyFinished."""
    experiment, run_dir, resume_from, checkpoint = _configure(args)
    try:
        if checkpoint is None:
            return experiment, experiment.build(run_dir), run_dir, None
        state = data_state(checkpoint)
        built = experiment.build(run_dir, resumed_env_steps=state["env_steps"], completed_epochs=checkpoint["epoch"])
        _check_compatible(checkpoint, resume_from, built.module)
        problem = built.data.resume_problem(state)
        if problem is not None:
            raise BadInput(f"--resume {run_dir}: {problem}")
        if _finished(built.data, state):
            raise AlreadyFinished(
                f"{run_dir} already finished at {state['env_steps']:,} env steps (Experiment.total_env_steps = "
                f"{experiment.total_env_steps:_}); nothing to do; to extend it add "
                '--gin_bindings="Experiment.total_env_steps = M" with a larger M'
            )
        return experiment, built, run_dir, resume_from
    except (BadInput, AlreadyFinished):
        raise
    except Exception as error:  # noqa: BLE001  (Lightning's, torch's, TorchRL's refusals of the config)
        raise BadInput(_did_you_mean(_one_line(error))) from error


def _quiet_libraries() -> None:
    """Silences library chatter that says nothing to a user of this run: TorchRL's notes,
    Lightning's (device lines, model summary, "fit stopped"; they would also break the one
    line of a bad-input exit) and warnings about how the framework drives them."""
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*IterableDataset.*has.*__len__.*")
    warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")  # Lightning's all_gather
    warnings.filterwarnings("ignore", message=".*isinstance.*treespec.*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*not DPP.*")  # cvxpy, inside TorchJD's Nash-MTL
    # A resume part-way through the run's one epoch: Lightning cannot see that the stream resumes,
    # but the data module's own state_dict (counters, sampler, buffers) continues it, so the
    # warning that the dataloader is not resumable is false here.
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _quiet_libraries()
    torch.set_flush_denormal(True)  # keeps long CPU runs from slowing down on denormals
    try:
        experiment, built, run_dir, resume_from = _build(args)
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except AlreadyFinished as finished:
        print(finished)
        return 0
    if unread := unused_bindings(args.gin_bindings):  # no callback on every update otherwise
        built.trainer.callbacks.append(
            WarnAfterFirstUpdate([f"warning: --gin_bindings {binding!r} has no effect: {why}" for binding, why in unread])
        )
    creates_run_dir = not run_dir.exists()
    config_file = run_dir / "config.gin"
    resumed_config = None if creates_run_dir else config_file.read_text()
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"error: cannot create the run folder {run_dir}: {error.strerror}", file=sys.stderr)
        return 2
    with run_folder_lock(run_dir, take=built.trainer.is_global_zero) as ours:
        if not ours:
            print(f"error: run folder {run_dir} is in use by another process (a run, a sweep or a --resume); "
                  "wait for it to end or stop it, then --resume", file=sys.stderr)
            return 2
        earlier_event_files = set(run_dir.glob(EVENT_FILES))
        try:
            summary = experiment.run(built, run_dir, resume_from)
        except (KeyboardInterrupt, SystemExit):  # SIGINT, or Lightning's SIGTERMException
            print(f"error: interrupted; continue with --resume {run_dir}", file=sys.stderr)
            return 1
        except Exception as error:  # noqa: BLE001  (any failure: report it, exit 2 or 1)
            if not built.monitor.updated:
                # Before the first update (Lightning's set-up, the collectors, warm-up): the input's
                # fault, reported like any other, and the folder this call made is removed.
                if built.trainer.is_global_zero:  # DDP workers fail alike: one line, from rank 0
                    if creates_run_dir:
                        shutil.rmtree(run_dir, ignore_errors=True)
                    else:  # the refused bindings must not stay in the config a later --resume reads
                        replace_text(config_file, resumed_config)
                        for path in set(run_dir.glob(EVENT_FILES)) - earlier_event_files:
                            path.unlink()  # an attempt that logged nothing
                    print(f"error: {_did_you_mean(_one_line(error))}", file=sys.stderr)
                return 2
            if not isinstance(error, CheckpointWriteError):  # that one says all in its line
                traceback.print_exc()
            print(f"error: run failed: {_one_line(error)}; run folder: {run_dir}", file=sys.stderr)
            return 1
        if "tasks" in summary:  # rank 0 evaluates; DDP workers have nothing to print
            _print_results(summary, run_dir, resumed=resume_from is not None)
        return 0


def _print_results(summary: dict, run_dir: Path, resumed: bool = False) -> None:
    print(f"\nrun folder: {run_dir}")
    print(f"{'task':<24}{'return':>10}{'success':>10}{'score':>10}")
    for name, result in summary.get("tasks", {}).items():
        cells = [f"{v:>10.3f}" if v is not None else f"{'-':>10}" for v in result.values()]
        print(f"{name:<24}{''.join(cells)}")
    means = [summary.get(k) for k in ("mean_return", "mean_success", "mean_score")]
    print(f"{'mean':<24}" + "".join(f"{v:>10.3f}" if v is not None else f"{'-':>10}" for v in means))
    counts = f"{summary['total_env_steps']} env steps, {summary['updates']} updates"
    if resumed:  # the time and rates are this attempt's alone, the counts the whole run's
        counts += f" in all; this attempt: {round(summary['env_steps_per_second'] * summary['wall_time_s'])} env steps"
    print(f"{counts} in {summary['wall_time_s']:.0f} s ({summary['env_steps_per_second']:.0f} env steps/s, "
          f"{summary['updates_per_second']:.1f} updates/s)")
