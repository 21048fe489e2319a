"""`mupctl` command line. Heavy modules (torch, matplotlib, wandb) are imported inside commands so
`--help`, `plan`, `validate` and `schema` start fast. Exit codes: 0 ok, 1 runtime failure,
2 invalid input (one line on stderr, nothing written or launched)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from mupctl import __version__
from mupctl.errors import EXIT_FAILURE, RunFailure, UserError, one_line, warn
from mupctl.paths import given_file, given_path

COMMAND_LINE: list[str] = []  # this invocation, as typed: `train`/`resume` record it in the run directory


class Mupctl(TyperGroup):
    """The root command. Its `main` is the one entry point (`mupctl`, `python -m mupctl`, and Typer's
    `CliRunner` in tests): usage errors (click's) and invalid input (ours) become one line on stderr,
    exit 2; runtime failures (ours, and the OS refusing a file operation) one line, exit 1."""

    def main(self, args=None, *rest, standalone_mode: bool = True, **kwargs):
        COMMAND_LINE[:] = ["mupctl", *(sys.argv[1:] if args is None else args)]
        # click's UsageError, whichever click typer runs on (typer ≥ 0.2x ships its own copy)
        usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
        try:
            code = super().main(args, *rest, standalone_mode=False, **kwargs)
        except usage_error as err:
            message = err.format_message().rstrip(".")
            if type(err).__name__ == "NoArgsIsHelpError":  # a bare `mupctl` or `mupctl data`: its help, as click does
                print(err.format_message(), file=sys.stderr)
            elif message:  # empty when click itself printed a bare command's help (click < 8.2)
                path = err.ctx.command_path if err.ctx else self.command_path(COMMAND_LINE[1:])
                print(f"error: {message} (see `{path} --help`)", file=sys.stderr)
            sys.exit(err.exit_code)
        except typer.Abort:
            print("aborted", file=sys.stderr)
            sys.exit(130)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        except RunFailure as err:
            print(f"failed: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        except OSError as err:  # the file system refused a read or write that the input checks let through
            print(f"failed: {one_line(str(err))}", file=sys.stderr)
            sys.exit(EXIT_FAILURE)
        sys.exit(code if isinstance(code, int) else 0)

    def command_path(self, args: list[str]) -> str:
        """`mupctl plan`, `mupctl data prepare`: the command that `args` name (for errors raised before
        click made a context for it, e.g. an option missing its value)."""
        path, group = ["mupctl"], self
        for arg in args:
            group = getattr(group, "commands", {}).get(arg)
            if group is None:
                break
            path.append(arg)
        return " ".join(path)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # as Abort: click would print an empty line before it
            raise typer.Abort() from None


class Command(TyperCommand):
    """Every command's help, as click renders it: arguments in capitals in the usage line (`RUN_DIR`,
    `[RECIPE]`; typer's own click copy writes `{run_dir}`), flags as flags (`--json`), values by metavar."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:  # also what usage errors name: "Missing argument 'RUN_DIR'"
            if param.param_type_name == "argument":
                param.metavar = (param.metavar or param.name).upper()

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar + ("…" if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        params = self.get_params(ctx)
        sections = {"Arguments": [(p.metavar, p.help or "") for p in params if p.param_type_name == "argument"],
                    "Options": [r for p in params if p.param_type_name == "option" and (r := p.get_help_record(ctx))]}
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class Typer(typer.Typer):
    """typer.Typer whose commands are `Command`s and whose help is click's plain text (typer's rich panels
    show a type after every option, `--json <bool>` included), with `-h` as well as `--help`."""

    def __init__(self, **kwargs):
        super().__init__(rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]}, **kwargs)

    def command(self, *args, cls=Command, **kwargs):
        return super().command(*args, cls=cls, **kwargs)


app = Typer(cls=Mupctl, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
            help="Compile a YAML recipe into a resolved muP policy; train, resume and diagnose runs.")
data_app = Typer(no_args_is_help=True, help="Data preparation.")
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        print(f"mupctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the mupctl version and exit")):
    """Compile a YAML recipe into a resolved muP policy; train, resume and diagnose runs."""

RecipeArg = typer.Argument(None, help="recipe YAML (omit for the embedded tiny CPU default)")
SetOpt = typer.Option([], "--set", metavar="KEY=VALUE", help="override a recipe field before validation, e.g. "
                                                                 "optimizer.lr=1e-3 (repeatable)")
UseMupOpt = typer.Option(False, "--use-mup", help="deprecated: same as scaling.recipe: mup")
JsonOpt = typer.Option(False, "--json", help="one JSON object on stdout")
RunJsonOpt = typer.Option(False, "--json", help="print nothing while it runs, then one JSON object (the run's "
                                                "`status --json`); train.log has the workers' lines")
MaxRestartsOpt = typer.Option(None, "--max-restarts", help="worker restarts from the latest checkpoint")


def _plan(path: Optional[Path], overrides: List[str], use_mup: bool):
    """Load, validate and compile into a `Plan`; the compiler's warnings go to stderr."""
    from mupctl.plan import compile_plan
    from mupctl.recipe import load_recipe
    p = compile_plan(load_recipe(path, overrides, use_mup=use_mup))
    warn(p.warnings)
    return p


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


@app.command()
def plan(recipe: Optional[Path] = RecipeArg, set_: List[str] = SetOpt, use_mup: bool = UseMupOpt,
         as_json: bool = JsonOpt,
         explain: bool = typer.Option(False, "--explain", help="show each value's exponents of m and λ"),
         verify: bool = typer.Option(False, "--verify", help="realize model+optimizer on CPU and check them "
                                                             "against the plan (exit 1 on mismatch)")):
    """Compile the recipe and show the resolved policy and the torchrun command."""
    from mupctl.launch.command import torchrun_argv
    p = _plan(recipe, set_, use_mup)
    mismatches = _verify(p) if verify else None
    shown = p.to_json() | {"command": torchrun_argv(p)}  # the launcher's argv: shown, not part of the plan
    if as_json:
        emit_json(shown if mismatches is None else shown | {"verify": [m.as_dict() for m in mismatches]})
    else:
        from mupctl.render import print_plan
        print_plan(shown, explain=explain)
        if mismatches is not None:
            from mupctl.render import print_mismatches
            print_mismatches(mismatches)
    if mismatches:
        raise typer.Exit(EXIT_FAILURE)


def _verify(p: dict):
    """Realize the plan on CPU (refused up front when its fp32 weights exceed this machine's RAM)."""
    import os
    from mupctl.verify import verify
    need = 4 * p.summary["params"]  # fp32 weights of the whole model
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > ram / 2:
        raise UserError(f"builds the whole model on CPU: {need / 2**30:.1f} GiB of fp32 weights, this machine has "
                        f"{ram / 2**30:.1f} GiB of RAM; verify a smaller shape of the same recipe instead", "--verify")
    return verify(p)


@app.command()
def validate(recipe: Optional[Path] = RecipeArg, set_: List[str] = SetOpt, use_mup: bool = UseMupOpt,
             as_json: bool = JsonOpt):
    """Check a recipe (schema, shapes, scaling combination) without running anything."""
    try:
        p = _plan(recipe, set_, use_mup)
    except UserError as err:
        if as_json:  # and still the one line on stderr, exit 2
            emit_json({"valid": False, "field": err.field, "error": str(err).removeprefix(f"{err.field}: ")})
        raise
    if as_json:
        emit_json({"valid": True, "name": p.name, "recipe": p.recipe, "optimizer": p.optimizer, "hash": p.hash})
    else:
        print(f"ok: {p.name} ({p.recipe}, {p.optimizer}, plan {p.hash})")


@app.command()
def schema():
    """Print the JSON Schema of the recipe (for agents and editors)."""
    from mupctl.recipe.load import legacy_schema
    from mupctl.recipe.schema import Recipe
    schema = Recipe.model_json_schema()
    schema["properties"] |= legacy_schema()
    emit_json(schema)


@app.command()
def init(name: str = typer.Argument(..., help="recipe name; writes NAME.yaml"),
         template: str = typer.Option("tiny", "--template", "-t", help="tiny (CPU, 1-2.5 minutes) | none | mup | "
                                                                        "depth_mup | muon (GPU starting points)"),
         out: Optional[str] = typer.Option(None, "--out", help="output path (default NAME.yaml)"),
         force: bool = typer.Option(False, "--force", help="overwrite an existing file")):
    """Write a starter recipe from templates/ and say how big a run it is."""
    from mupctl.templates import write_template
    path, p = write_template(name, template, given_file(out, "--out"), force)
    print(f"wrote {path}: template {template}, {p.summary['params']:,} parameters, {p.train.steps:,} steps of "
          f"{p.tokens_per_step:,} tokens ({p.train.steps * p.tokens_per_step:,} tokens); run it with "
          f"`mupctl train {path}`")


@app.command()
def train(recipe: Optional[Path] = RecipeArg, set_: List[str] = SetOpt, use_mup: bool = UseMupOpt,
          nproc_per_node: Optional[int] = typer.Option(None, "--nproc-per-node", help="workers per node"),
          nnodes: Optional[int] = typer.Option(None, "--nnodes", help="number of nodes"),
          max_restarts: Optional[int] = MaxRestartsOpt,
          run_dir: Optional[str] = typer.Option(None, "--run-dir", help="default: <run.root>/<name>-<time>"),
          as_json: bool = RunJsonOpt):
    """Compile the plan, create the run directory and train with torchrun."""
    from mupctl.launch.launcher import train as launch_train
    _ended(launch_train(recipe, set_, use_mup=use_mup, run_dir=given_path(run_dir, "--run-dir"), command=COMMAND_LINE,
                        quiet=as_json, nproc_per_node=nproc_per_node, nnodes=nnodes, max_restarts=max_restarts),
           as_json)


@app.command()
def resume(run_dir: str = typer.Argument(..., help="a run directory made by `mupctl train`"),
           set_: List[str] = SetOpt,
           force: bool = typer.Option(False, "--force", help="accept changes that break exact resume"),
           max_restarts: Optional[int] = MaxRestartsOpt,
           nproc_per_node: Optional[int] = typer.Option(None, "--nproc-per-node", help="workers per node"),
           as_json: bool = RunJsonOpt):
    """Continue a run from its newest valid checkpoint (a finished run: say so, launch nothing, exit 0)."""
    from mupctl.launch.launcher import resume as launch_resume
    _ended(launch_resume(given_path(run_dir, "RUN_DIR"), set_, force=force, command=COMMAND_LINE, quiet=as_json,
                         max_restarts=max_restarts, nproc_per_node=nproc_per_node), as_json)


def _ended(status: dict, as_json: bool) -> None:
    """How `train`/`resume` end: the JSON object or the summary line on stdout; a run that did not finish
    is a `RunFailure` (one line on stderr, exit 1)."""
    from mupctl.run_state import FINISHED
    from mupctl.status import summary_line
    if as_json:
        emit_json(status)
    else:
        print(f"mupctl: {status.get('note') or summary_line(status, status.get('seconds'))}", flush=True)
    if status["state"] != FINISHED:
        raise RunFailure(status["reason"])


@app.command()
def status(run_dir: str = typer.Argument(..., help="a run directory made by `mupctl train`"), as_json: bool = JsonOpt):
    """Whether a run is alive, its progress, newest checkpoint, ETA, and how it ended (read only)."""
    from mupctl.status import format_status, run_status
    result = run_status(given_path(run_dir, "RUN_DIR"))
    if as_json:
        emit_json(result)
    else:
        print(format_status(result))


StepOpt = typer.Option(None, "--step", help="checkpoint step (default: the newest readable one)")


@app.command()
def export(run_dir: str = typer.Argument(..., help="a run directory made by `mupctl train`"),
           step: Optional[int] = StepOpt,
           fmt: str = typer.Option(..., "--format", help="hf: a Hugging Face transformers model directory"),
           out: str = typer.Option(..., "--out", help="output directory"),
           dtype: str = typer.Option("fp32", "--dtype", help="fp32 | bf16"),
           force: bool = typer.Option(False, "--force", help="replace a non-empty --out"), as_json: bool = JsonOpt):
    """Export a checkpoint with its muP multipliers folded into the weights (LlamaForCausalLM or GPT2LMHeadModel)."""
    from mupctl.export import export_hf
    done = export_hf(given_path(run_dir, "RUN_DIR"), given_path(out, "--out"), step, dtype, force, fmt)
    if as_json:
        emit_json(done)
    else:
        print(f"wrote {done['out']}: {done['architecture']} from step {done['step']} ({done['dtype']}"
              f"{', tokenizer ' + done['tokenizer'] if done['tokenizer'] else ', no tokenizer'})")


@app.command("eval")
def eval_(run_dir: str = typer.Argument(..., help="a run directory made by `mupctl train`"),
          step: Optional[int] = StepOpt,
          text: Optional[str] = typer.Option(None, "--text", help="a UTF-8 text file (the run's tokenizer)"),
          data: Optional[str] = typer.Option(None, "--data", help="a `data prepare` directory: its val.bin"),
          as_json: bool = JsonOpt):
    """Loss of a checkpoint on held-out text: mean next-token cross-entropy over windows of seq_len + 1."""
    from mupctl.heldout import evaluate
    result = evaluate(given_path(run_dir, "RUN_DIR"), step, given_path(text, "--text"), given_path(data, "--data"))
    if as_json:
        emit_json(result)
    else:
        bpb = f", {result['bits_per_byte']:.4f} bits/byte" if "bits_per_byte" in result else ""
        print(f"step {result['step']}: loss {result['loss']:.4f} nats over {result['tokens']:,} tokens{bpb}")


@data_app.command("prepare")
def data_prepare(inputs: List[Path] = typer.Argument(..., help=".txt, .jsonl, .jsonl.gz or .parquet files, or "
                                                                "directories of them"),
                 out: str = typer.Option(..., "--out", help="output directory for train.bin/val.bin/meta.json"),
                 tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="a local tokenizer.json "
                                                                                    "(default: bytes)"),
                 val_fraction: float = typer.Option(0.05, "--val-fraction", help="the share of each file's tokens "
                                                                                   "(its end) that goes to val.bin"),
                 text_field: str = typer.Option("text", "--text-field", help="JSONL field / Parquet column of the text"),
                 workers: Optional[int] = typer.Option(None, "--workers", help="tokenizing processes (default: the "
                                                       "CPUs with --tokenizer, 1 with the byte tokenizer)"),
                 separator: str = typer.Option("\n\n", "--separator", help="text after every JSONL/Parquet record"),
                 force: bool = typer.Option(False, "--force", help="replace a dataset already in --out"),
                 as_json: bool = JsonOpt):
    """Tokenize text into .bin shards for `data.source: bin`."""
    from mupctl.data import prepare
    out = given_path(out, "--out")
    tokenizer = given_path(tokenizer, "--tokenizer")
    meta = prepare([str(p) for p in inputs], out, tokenizer=str(tokenizer) if tokenizer else None,
                   val_fraction=val_fraction, text_field=text_field, workers=workers, separator=separator,
                   force=force)
    if as_json:
        emit_json(meta)
    else:
        print(f"wrote {out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens ({meta['dtype']})")


def _sizes(widths: Optional[str], depths: Optional[str]):
    from mupctl.diagnostics.coord_cli import parse_list
    return (parse_list(widths, int, "--widths") if widths else None,
            parse_list(depths, int, "--depths") if depths else None)


@app.command("coord-check")
def coord_check(recipe: Path = typer.Argument(..., help="recipe YAML"), set_: List[str] = SetOpt,
                widths: Optional[str] = typer.Option(None, "--widths", help="e.g. 128,256,512,1024"),
                depths: Optional[str] = typer.Option(None, "--depths", help="e.g. 2,4,8,16"),
                steps: int = typer.Option(5, "--steps", help="optimizer steps per size (slopes judged from step 2)"),
                batch: int = typer.Option(8, "--batch", help="sequences per step"),
                seq_len: Optional[int] = typer.Option(None, "--seq-len", help="default: model.seq_len"),
                threshold: float = typer.Option(0.1, "--threshold", help="max |log-log slope| to pass"),
                seed: int = typer.Option(0, "--seed", help="init and data seed"),
                out: str = typer.Option(..., "--out", help="output directory for coord_check.json and .png"),
                as_json: bool = JsonOpt):
    """Activation RMS per role across widths or depths (PNG + JSON); exit 1 when not flat."""
    from mupctl.diagnostics.coord_cli import format_summary, run_coord_check
    w, d = _sizes(widths, depths)
    summary = run_coord_check(recipe, set_, w, d, steps, batch, seq_len, given_path(out, "--out"),
                              threshold=threshold, seed=seed)
    if as_json:
        emit_json(summary)
    else:
        print(format_summary(summary))
    if not summary["pass"]:
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def sweep(recipe: Path = typer.Argument(..., help="recipe YAML"), set_: List[str] = SetOpt,
          widths: Optional[str] = typer.Option(None, "--widths", help="d_model values, e.g. 256,512,1024"),
          depths: Optional[str] = typer.Option(None, "--depths", help="n_layers values, e.g. 4,8,16"),
          lrs: str = typer.Option(..., "--lrs", help="e.g. 1e-3,3e-3,1e-2"),
          steps: int = typer.Option(..., "--steps", help="training steps of every cell"),
          seeds: int = typer.Option(1, "--seeds", help="seeds per size and LR"),
          out: str = typer.Option(..., "--out", help="directory for the cells, sweep.json, sweep.md, sweep.png"),
          parallel: Optional[int] = typer.Option(None, "--parallel", help="cells at a time (default: one per GPU)"),
          gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids to use, e.g. 0,1"),
          lr_key: Optional[str] = typer.Option(None, "--lr-key", help="default optimizer.lr (muon: "
                                                                      "optimizer.muon.lr)"),
          baseline: Optional[str] = typer.Option(None, "--baseline", help="also sweep the recipe's twin under this "
                                                 "scaling recipe (none, or mup for depth_mup) and report the regret"),
          baseline_lrs: Optional[str] = typer.Option(None, "--baseline-lrs", help="the twin's LR grid (default: --lrs)"),
          emit_recipe: Optional[str] = typer.Option(None, "--emit-recipe", help="write the tuned target recipe"),
          target: List[str] = typer.Option([], "--target", help="target model field, e.g. model.d_model=4096"),
          force: bool = typer.Option(False, "--force", help="overwrite --emit-recipe"), as_json: bool = JsonOpt):
    """LR sweep across widths or depths: optimum per size, its shift in octaves, plot and report."""
    from mupctl.diagnostics.coord_cli import parse_list
    from mupctl.diagnostics.sweep import run_sweep
    from mupctl.diagnostics.sweep_report import regret_text, shift_interval_text
    from mupctl.diagnostics.tune import check_target
    w, d = _sizes(widths, depths)
    out, emit_recipe = given_path(out, "--out"), given_file(emit_recipe, "--emit-recipe")
    if emit_recipe:
        from mupctl.diagnostics.sweep import swept_key
        from mupctl.recipe import load_recipe
        proxy = load_recipe(recipe, set_)
        check_target(emit_recipe, force, target, "--emit-recipe", proxy=proxy, tuned=(swept_key(proxy, lr_key),))
    elif target:
        raise UserError("applies to the emitted recipe; add --emit-recipe PATH", "--target")
    report = run_sweep(recipe, set_, w, d, parse_list(lrs, float, "--lrs"), steps, seeds, out, parallel=parallel,
                       gpus=parse_list(gpus, int, "--gpus") if gpus else None, lr_key=lr_key, baseline=baseline,
                       baseline_lrs=parse_list(baseline_lrs, float, "--baseline-lrs") if baseline_lrs else None)
    tuned = _emit(out, target, emit_recipe, force, "--emit-recipe") if emit_recipe else None
    if as_json:
        emit_json(report if tuned is None else report | {"emitted": tuned})
    else:
        shift, largest = report["shift_octaves"], report["curves"][-1]
        shown = f"{shift:.2f} octaves" if shift is not None else \
            "n/a (one size)" if len(report["sizes"]) < 2 else "n/a (no finite optimum)"
        cost = "n/a" if largest["transfer_cost"] is None else f"{largest['transfer_cost']:.4f} nats"
        print(f"sweep: optimum shift {shown}{shift_interval_text(report)}; transfer cost at {report['axis']} "
              f"{largest['size']}: {cost}{regret_text(report)}; {out / 'sweep.md'}")
        for caveat in report["warnings"]:
            print(f"  caveat: {caveat}")


@app.command()
def tune(sweep_dir: str = typer.Argument(..., help="a sweep --out directory"),
         target: List[str] = typer.Option([], "--target", help="target model field, e.g. model.d_model=4096"),
         out: str = typer.Option(..., "--out", help="target recipe path"),
         force: bool = typer.Option(False, "--force", help="overwrite --out"), as_json: bool = JsonOpt):
    """Tune small, launch big: write the target recipe with the sweep's measured optimum LR."""
    tuned = _emit(given_path(sweep_dir, "SWEEP_DIR"), target, given_file(out, "--out"), force)
    if as_json:
        emit_json(tuned)


@app.command("tune-base")
def tune_base(recipe: Path = typer.Argument(..., help="recipe YAML (the target, or any size: it trains at its base shape)"),
              set_: List[str] = SetOpt,
              keys: str = typer.Option("optimizer.lr,model.init_std,scaling.alpha_out", "--keys",
                                       help="positive real recipe keys to tune at the base shape, in this order"),
              steps: int = typer.Option(..., "--steps", help="training steps of every cell"),
              seeds: int = typer.Option(1, "--seeds", help="seeds per grid point"),
              rounds: int = typer.Option(2, "--rounds", help="passes over --keys"),
              points: int = typer.Option(5, "--points", help="grid points per sweep (odd)"),
              work: str = typer.Option(..., "--work", help="directory for the sweeps and tune_base.json"),
              out: str = typer.Option(..., "--out", help="target recipe path"),
              target: List[str] = typer.Option([], "--target", help="target model field, e.g. model.d_model=4096"),
              force: bool = typer.Option(False, "--force", help="overwrite --out"),
              parallel: Optional[int] = typer.Option(None, "--parallel", help="cells at a time (default: one per GPU)"),
              gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids to use, e.g. 0,1"),
              as_json: bool = JsonOpt):
    """Tune several base hyperparameters at the base shape (coordinate descent), then emit the target recipe."""
    from mupctl.diagnostics.coord_cli import parse_list
    from mupctl.diagnostics.tune_base import tune_base as run
    summary = run(recipe, set_, [k.strip() for k in keys.split(",")], steps, seeds, rounds, points,
                  given_path(work, "--work"), given_file(out, "--out"), target, force, parallel=parallel,
                  gpus=parse_list(gpus, int, "--gpus") if gpus else None)
    warn(summary["warnings"])
    print(f"wrote {summary['path']}: " + ", ".join(f"{k} = {v:.4g}" for k, v in summary["tuned"].items())
          + f" (base val loss {summary['base_loss']:.4f}); check it with `mupctl plan {summary['path']}`",
          file=sys.stderr)
    if as_json:
        emit_json(summary)


def _emit(sweep_dir: Path, target: List[str], out: Path, force: bool, field: str = "--out") -> dict:
    from mupctl.diagnostics.tune import emit_recipe
    tuned = emit_recipe(sweep_dir, target, out, force, field)
    warn(tuned["warnings"])
    print(f"wrote {tuned['path']}: {tuned['lr_key']} = {tuned['lr']:.3g} (measured at size "
          f"{tuned['reference_size']}); check it with `mupctl plan {tuned['path']}`", file=sys.stderr)
    if tuned["regret"]:
        from mupctl.diagnostics.sweep_report import regret_text
        print("tune:" + regret_text({"regret": tuned["regret"], "axis": tuned["axis"]}).removeprefix(";"),
              file=sys.stderr)
    return tuned


def main() -> None:
    """Entry point (`Mupctl.main` handles errors and exit codes)."""
    app()
