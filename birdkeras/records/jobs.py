"""Running shard jobs here or on Apache Beam (`--runner beam`: Dataflow, Flink, Spark, or
Beam's local runner).

The jobs that grow with the archive (TFRecord builds, pseudo-labels, embeddings, batch
predictions) are already planned as independent shard jobs: a fixed list, each writing
one shard from a fixed set of inputs. Beam runs that list in parallel workers:

    Create(jobs) -> Reshuffle -> ParDo(write one shard)

and the driver then collects the shards' done markers as the local run does, so the
outputs (shard names, records, cards, failure lists) are the same. Exactly once under
retries: a shard is written to a temporary name unique to the attempt, renamed over its
final name (an atomic replace), and only then marked done; its content depends only on
its inputs, so a bundle run twice (Beam may retry one, or run one speculatively) writes
the same bytes under the same name, and a record is never in two shards.

Pipeline options are Beam's own, passed through (`--beam-option=--runner=DataflowRunner`,
...). Without any, the local runner runs `workers` processes
(`--direct_running_mode=multi_processing`). `apache-beam` is an optional dependency
(`pip install 'birdkeras[beam]'`).
"""

from __future__ import annotations

import logging

from tqdm.auto import tqdm

from birdkeras.errors import UserError


class BeamError(UserError):
    """Beam is missing or its options are unusable; the message says what to do."""


def beam_module():
    """The apache_beam package, or a `BeamError` saying how to install it."""
    try:
        import apache_beam  # noqa: PLC0415 - optional dependency (birdkeras[beam])
    except ImportError as err:
        raise BeamError("--runner beam needs Apache Beam: pip install 'birdkeras[beam]' (or pip "
                        "install apache-beam; on Dataflow add it to the workers' requirements)"
                        ) from err
    return apache_beam


def options(beam_args, workers: int):
    """Beam pipeline options: the given flags, or the local runner with `workers` processes."""
    beam_module()  # a clear error when Beam is missing
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415 - optional

    args = list(beam_args or [])
    if not any(a.startswith("--runner") for a in args):
        args += ["--runner=DirectRunner", f"--direct_num_workers={max(workers, 1)}",
                 "--direct_running_mode=multi_processing"]
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append("--default_sdk_harness_log_level=WARNING")
    logging.getLogger("apache_beam").setLevel(logging.ERROR)  # its workers are chatty
    return PipelineOptions(args)


def run_beam(jobs: list, write, beam_args=(), workers: int = 2, name: str = "birdkeras") -> None:
    """Runs `write(job)` (writes one shard, idempotently) for every job on Beam.

    `write` must pickle by reference (a module-level function, or a partial of one), so
    that workers import it; state a worker should build once (models) is cached per
    process by the function itself.

    Args:
        jobs: the job descriptions (picklable).
        write: writes one job's shard.
        beam_args: Beam pipeline options.
        workers: local runner processes when no runner is given.
        name: the pipeline's step names.
    """
    beam = beam_module()
    if not jobs:
        return
    with beam.Pipeline(options=options(beam_args, workers)) as pipeline:
        _ = (pipeline
             | f"{name}: jobs" >> beam.Create(jobs, reshuffle=False)
             | f"{name}: spread" >> beam.Reshuffle()
             | f"{name}: write shards" >> beam.Map(write))


def run_jobs(jobs: list, write, runner: str = "local", beam_args=(), name: str = "birdkeras",
             progress: bool = False, workers: int = 2) -> None:
    """`write(job)` for every job: in this process (a progress bar per job when
    `progress`), or on Beam (`runner="beam"`, see `run_beam`).

    Args:
        jobs: the job descriptions.
        write: writes one job's shard.
        runner: "local" or "beam".
        beam_args: Beam pipeline options.
        name: progress bar and pipeline label.
        progress: a progress bar (local).
        workers: Beam's local runner processes.
    """
    if runner == "beam":
        run_beam(jobs, write, beam_args, workers, name)
        return
    for job in tqdm(jobs, unit="shard", desc=name, disable=not progress):
        write(job)
