"""`ganflow`: the one entry point.

Every command that produces a result accepts --json and then prints exactly
one JSON object on stdout (everything else goes to stderr). Problems the user
can fix end with one line, `ganflow: error: ...`, and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Iterator

from gan_model.errors import STOPPING, GanflowError

if TYPE_CHECKING:
    from gan_model.config import GanflowConfig


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """Send everything written to stdout (also by Ray's log threads and subprocesses) to stderr."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _config(args, *extra: str) -> "GanflowConfig":
    from gan_model.config import load_config
    return load_config(args.config, [*(args.set or []), *extra])


def _emit(args, result: dict, human: str) -> None:
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(human)


# --- commands: parse, call one public function, print -----------------------

def cmd_run(args) -> None:
    from gan_model.config import to_yaml

    cfg = _config(args)
    with stdout_to_stderr(args.json):
        print("ganflow: resolved configuration:\n  " + to_yaml(cfg).rstrip().replace("\n", "\n  "), file=sys.stderr)
        _quiet_user_error_tracebacks()
        from flows.pipeline import run_pipeline
        s = run_pipeline(cfg, force=args.force)
    alias = f" -> @{s['alias']}" if s.get("alias") else ""
    fid_note = "" if s.get("fid_comparable", True) else "  [not comparable with published FIDs]"
    lines = [f"ganflow run {'skipped: ' + s['skip_reason'] if s['skipped'] else 'complete'}",
             f"  data set    {s['dataset_version']} ({s['n_images']} images, {s['n_skipped']} skipped)"]
    if s.get("fid") is not None:
        kid_std = f" +- {s['kid_std']:.2g}" if s.get("kid_std") is not None else ""
        lines.append(f"  FID         {s['fid']:.4g}   KID {s['kid']:.4g}{kid_std}{fid_note}")
    if s.get("model_version"):
        lines.append(f"  model       {s['model_name']} v{s['model_version']}{alias} ({s['decision']})")
    if s.get("sample_grid"):
        lines.append(f"  samples     {s['sample_grid']}")
    if s.get("latent_walks"):
        lines.append(f"  latent walk {' '.join(s['latent_walks'])}")
    lines += [f"  MLflow UI   {s['mlflow_ui']}", f"  Prefect UI  {s['prefect_ui']}"]
    _emit(args, s, "\n".join(lines))


def cmd_ingest(args) -> None:
    from flows.pipeline import ingest_only

    cfg = _config(args, *([f"data.source={args.source}"] if args.source else []),
                  *([f"data.endpoint_url={args.endpoint_url}"] if args.endpoint_url else []))
    with stdout_to_stderr(args.json):
        ds = ingest_only(cfg)
    skipped = f": {json.dumps(ds['skipped'])}" if ds["skipped"] else ""
    _emit(args, ds, f"data set {ds['version']}: {ds['n_images']} images at {ds['uri']} ({ds['n_skipped']} skipped"
          f"{skipped}; {ds['bytes_downloaded'] / 1e6:.1f} MB downloaded{', reused' if ds['reused'] else ''})")


def cmd_fid(args) -> None:
    from tasks.evaluate import fid_between_folders

    with stdout_to_stderr(args.json):
        r = fid_between_folders(args.dir_a, args.dir_b, args.weights, args.batch_size,
                                weights_sha256=args.weights_sha256, save_stats=args.save_stats, stats=args.stats)
    _emit(args, r, f"FID {r['fid']:.6g}   KID {r['kid']:.4g} +- {r['kid_std']:.2g}   "
          f"({r['n_generated']} vs {r['n_reference']} images, {r['weights']} Inception weights)")


def cmd_sample(args) -> None:
    from tasks.sample import sample_images

    with stdout_to_stderr(args.json):
        r = sample_images(args.model, args.n, args.out, seed=args.seed, truncation=args.truncation, z_file=args.z,
                          texture_scale=args.texture_scale)
    what = (f"{r['frames']} frames of {r['n']} latent walks" if "frames" in r else
            f"{r['n']} textures of {r['size']}x{r['size']}" if "size" in r else f"{r['n']} images")
    _emit(args, r, f"{what} from {args.model} (v{r['model_version']}) -> {r['out']}")


def cmd_evaluate(args) -> None:
    from tasks.evaluate import evaluate_registered

    with stdout_to_stderr(args.json):
        r = evaluate_registered(args.model, args.set or [], protocol_of=args.protocol_of)
    recorded = (f"   (recorded before under this protocol: {r['recorded_fid']:.6g})" if r["recorded_fid"] is not None
                else "   (first evaluation under this protocol; recorded on the version)")
    other = r["compared_with"]
    if other:
        recorded += (f"\n  v{other['model_version']} under the same protocol: FID {other['fid']:.6g}"
                     if other["fid"] is not None else f"\n  v{other['model_version']} has no FID under this protocol")
    _emit(args, r, f"{r['model_name']} v{r['model_version']}: FID {r['fid']:.6g}   "
          f"KID {r['kid']:.4g} +- {r['kid_std']:.2g}{recorded}")


def cmd_promote(args) -> None:
    from gan_model.config import RegistryConfig
    from tasks.registry import promote

    r = promote(RegistryConfig(), args.name, args.version, alias=args.alias, rollback=args.rollback)
    back = f" (rolled back from v{r['rolled_back']})" if r.get("rolled_back") else ""
    _emit(args, r, f"{r['model_name']} v{r['model_version']} -> @{r['alias']}{back}")


def cmd_models(args) -> None:
    from gan_model.config import RegistryConfig
    from tasks.registry import list_versions

    r = list_versions(RegistryConfig(), args.name)
    head = ("VERSION", "ALIASES", "FID", "KID", "PROTOCOL", "WEIGHTS", "DATA SET", "CREATED", "DECISION")
    rows = [head] + [(v["version"], ",".join("@" + a for a in v["aliases"]) or "-",
                      f"{v['fid']:.4g}" if v["fid"] is not None else "-", f"{v['kid']:.3g}" if v["kid"] is not None else "-",
                      v["protocol_key"] or "-", v["fid_weights"] or "-", v["dataset_version"] or "-",
                      v["created"][:16].replace("T", " "), v["decision"] or "-") for v in r["versions"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    _emit(args, r, "\n".join("  ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]) for row in rows))


def cmd_serve_model(args) -> None:
    from tasks.serving import serve_model

    serve_model(args.model, host=args.host, port=args.port, workers=args.workers)


def cmd_serve(args) -> None:
    from flows.pipeline import serve_pipeline

    _quiet_user_error_tracebacks()
    print(f"serving deployment {args.name!r} on cron {args.cron!r} ({args.timezone}); Ctrl-C stops it",
          file=sys.stderr)
    serve_pipeline(_config(args), args.cron, args.name, args.timezone, args.max_concurrent)


def cmd_deploy(args) -> None:
    from pathlib import Path

    from flows.deploy import apply_process_deployment, write_deployments

    out = write_deployments(_config(args), args.cron, Path(args.out), name=args.name, timezone=args.timezone,
                            image=args.image)
    if args.apply:
        apply_process_deployment(out, args.name)
    r = {"prefect_file": str(out), "deployments": [args.name, f"{args.name}-k8s"], "applied": [args.name] * args.apply}
    _emit(args, r, f"wrote {out} (deployments {args.name} and {args.name}-k8s)"
          + (f"; applied {args.name}: start a worker with `prefect worker start --pool ganflow-process`"
             if args.apply else ""))


def cmd_services(args) -> None:
    from infra.services import run_services
    try:
        run_services(s3_port=args.s3_port, mlflow_port=args.mlflow_port, prefect_port=args.prefect_port)
    except RuntimeError as err:  # e.g. the port is taken
        raise GanflowError(f"{err}: free the port or pass --s3-port/--mlflow-port/--prefect-port") from None


# --- plumbing -------------------------------------------------------------

class _NoTracebackFor(logging.Filter):
    """Prefect logs a failed task with its traceback; for a GanflowError the message is the
    useful part (the CLI ends with it), so the traceback is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], GanflowError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_user_error_tracebacks() -> None:
    import prefect  # noqa: F401  (configures Prefect's handlers, which the filter goes on)

    flt = _NoTracebackFor()
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                       if n.startswith("prefect")]
    for lg in loggers:
        for handler in lg.handlers:
            handler.addFilter(flt)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _psi(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganflow", description="S3 images in, an evaluated, registered GAN out.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp):
        sp.add_argument("--config", help="YAML file with data/model/train/eval/registry sections")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.steps=500")

    def with_json(sp):
        sp.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")

    sp = sub.add_parser("run", help="the whole pipeline once")
    sp.add_argument("--force", action="store_true",
                    help="train and register even when this data set version, recipe and protocol already were")
    with_config(sp); with_json(sp); sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("ingest", help="step 1 alone: S3 prefix -> versioned data set")
    sp.add_argument("--source", help="s3://bucket/prefix (default: data.source)")
    sp.add_argument("--endpoint-url", help="S3-compatible endpoint URL")
    with_config(sp); with_json(sp); sp.set_defaults(fn=cmd_ingest)

    sp = sub.add_parser("fid", help="FID and KID between two folders of images")
    sp.add_argument("dir_a"); sp.add_argument("dir_b", nargs="?", help="reference folder (or --stats FILE)")
    sp.add_argument("--weights", default="auto", help="standard | auto | random | path | s3:// URI")
    sp.add_argument("--weights-sha256", help="the sha256 a weights path or URI must have (default: the standard file's)")
    sp.add_argument("--save-stats", metavar="FILE", help="also save the reference side's statistics to FILE")
    sp.add_argument("--stats", metavar="FILE", help="reference statistics saved earlier with --save-stats, instead of DIR_B")
    sp.add_argument("--batch-size", type=_positive, default=32)
    with_json(sp); sp.set_defaults(fn=cmd_fid)

    sp = sub.add_parser("evaluate", help="FID/KID of a registered generator against its data set")
    sp.add_argument("--model", required=True, help="models:/NAME@ALIAS or models:/NAME/VERSION")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the run's config, e.g. eval.n_generated=2048")
    sp.add_argument("--protocol-of", metavar="URI", help="evaluate under this other version's protocol and data set "
                    "version, so the two FIDs compare (e.g. the champion under a new version's protocol)")
    with_json(sp); sp.set_defaults(fn=cmd_evaluate)

    sp = sub.add_parser("sample", help="images from a registered generator (its weights only, never its code)")
    sp.add_argument("--model", required=True, help="e.g. models:/ganflow-generator@champion")
    sp.add_argument("-n", type=_positive, default=None, help="images (or latent walks); default 64, or the rows of --z")
    sp.add_argument("--seed", type=int, default=0, help="first seed; image i uses seed+i")
    sp.add_argument("--truncation", type=_psi, default=1.0, metavar="PSI",
                    help="pull latents towards the mean: 1 = none (default), 0.7 = typical images, 0 = the mean")
    sp.add_argument("--z", metavar="FILE.npy", help="latent vectors (N, z_dim) to use instead of seeds")
    sp.add_argument("--texture-scale", type=_positive, metavar="K", help="render textures K times the training "
                    "resolution per side from a latent map (fully convolutional generators; -n defaults to 1)")
    sp.add_argument("--out", required=True,
                    help="grid.png, a folder (one PNG per image), or walk.gif / walk.mp4 (a looping latent walk)")
    with_json(sp); sp.set_defaults(fn=cmd_sample)

    sp = sub.add_parser("promote", help="set an alias by hand, or roll @champion back to the previous one")
    sp.add_argument("name"); sp.add_argument("version", nargs="?")
    how = sp.add_mutually_exclusive_group(required=True)
    how.add_argument("--alias", choices=["champion", "challenger"])
    how.add_argument("--rollback", action="store_true", help="give @champion back to the previous champion")
    with_json(sp); sp.set_defaults(fn=cmd_promote)

    sp = sub.add_parser("models", help="versions of a registered model: aliases, FID/KID, protocol, data set, date")
    sp.add_argument("name", nargs="?", default="ganflow-generator")
    with_json(sp); sp.set_defaults(fn=cmd_models)

    sp = sub.add_parser("serve-model", help="serve a registered generator over HTTP (MLflow's model server)")
    sp.add_argument("--model", default="models:/ganflow-generator@champion")
    sp.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default) or 0.0.0.0 to accept other machines")
    sp.add_argument("--port", type=int, default=5001)
    sp.add_argument("--workers", type=_positive, default=1)
    sp.set_defaults(fn=cmd_serve_model)

    sp = sub.add_parser("serve", help="schedule the pipeline on a Prefect server")
    sp.add_argument("--cron", required=True, help='e.g. "0 3 * * *"')
    sp.add_argument("--timezone", default="UTC", help="IANA time zone of the cron schedule, e.g. Europe/Berlin")
    sp.add_argument("--name", default="ganflow-nightly")
    sp.add_argument("--max-concurrent", type=_positive, default=1, help="runs of this deployment at once")
    with_config(sp); sp.set_defaults(fn=cmd_serve)

    sp = sub.add_parser("deploy", help="write (and apply) prefect.yaml deployments for Prefect workers")
    sp.add_argument("--cron", required=True, help='e.g. "0 3 * * *"')
    sp.add_argument("--timezone", default="UTC", help="IANA time zone of the cron schedule")
    sp.add_argument("--name", default="ganflow-nightly")
    sp.add_argument("--out", default="prefect.yaml", help="where to write the deployment file")
    sp.add_argument("--image", help="the ganflow image for the Kubernetes pool (default ganflow:VERSION)")
    sp.add_argument("--apply", action="store_true", help="register the process-pool deployment now")
    with_config(sp); with_json(sp); sp.set_defaults(fn=cmd_deploy)

    sp = sub.add_parser("services", help="local S3 server, MLflow UI and Prefect UI for development")
    sp.add_argument("--s3-port", type=int, default=9000)
    sp.add_argument("--mlflow-port", type=int, default=5000)
    sp.add_argument("--prefect-port", type=int, default=4200)
    sp.set_defaults(fn=cmd_services)
    return p


_watchdog = None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    for noisy in ("botocore", "urllib3", "alembic", "mlflow.store.db.utils", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from flows.environment import set_local_defaults
    set_local_defaults()
    # What this process starts (the local servers, Ray) must not
    # outlive it, even when it is killed with SIGKILL and no cleanup runs: a watchdog child kills
    # whatever of it is left once this process is gone.
    global _watchdog
    from tasks import watchdog
    _watchdog = watchdog.start([os.getpid()])  # kept referenced: closing its pipe is the signal

    # Ctrl-C, SIGTERM (a stopped container, `kill`) and SIGHUP (a closed terminal) all unwind: every
    # `ray_session()` and server context on the way out stops what it started. STOPPING tells
    # the retry policy and the handler below that whatever fails from here on failed because of it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    try:
        try:
            args.fn(args)
        finally:
            # Keep the result (or the error) the last thing printed: Prefect's
            # "stopping temporary server" notice at exit is not news.
            logging.getLogger("prefect").setLevel(logging.WARNING)
    except BaseException as err:
        if STOPPING.is_set():  # whatever the unwinding raised (a server gone with Ctrl-C ...)
            print(f"ganflow: {'interrupted' if _stopped_by == signal.SIGINT else 'terminated'}", file=sys.stderr)
            _exit_now(128 + _stopped_by)
        if isinstance(err, GanflowError):
            print(f"ganflow: error: {err}", file=sys.stderr)
            return err.exit_code
        raise
    return 0


_stopped_by = signal.SIGINT


def _stop(signum: int, _frame) -> None:
    global _stopped_by
    if not STOPPING.is_set():
        _stopped_by = signum
        STOPPING.set()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    sys.exit(128 + signum)


def _exit_now(code: int) -> None:
    """Exit after an interrupt without interpreter finalisation.

    The thread that ran `trainer.fit()` may still be inside Ray's C++ core when the
    interpreter tears down, which can abort the process (SIGABRT) instead of exiting with
    `code`. Cleanup registered with atexit still runs.
    """
    import atexit

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
