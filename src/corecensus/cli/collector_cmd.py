"""``corecensus collector``: ``serve`` the HTTP ingest for agents; ``token`` mints an agent's token."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import click

from corecensus.cli.output import error
from corecensus.errors import ConfigError, CorecensusError


@click.group()
def collector() -> None:
    """The collector: HTTP ingest for the fleet's agents, the store, /metrics, the analysis API."""


def _listen(value: str) -> tuple[str, int]:
    from corecensus.collector.config import MAX_PORT

    host, sep, port = value.rpartition(":")
    # isascii: str.isdigit() also takes "²", which int() then refuses (a traceback once)
    if not sep or not (port.isascii() and port.isdigit()) or not host:
        raise click.BadParameter("expected HOST:PORT (e.g. 127.0.0.1:8470, [::1]:8470)")
    if len(port) > 5 or int(port) > MAX_PORT:
        raise click.BadParameter(f"port {port} is not 0 (any free port) to {MAX_PORT}")
    return host.strip("[]"), int(port)


@collector.command()
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The DuckDB store (created if missing).",
)
@click.option(
    "--listen",
    default="127.0.0.1:8470",
    show_default=True,
    help="HOST:PORT to serve on (port 0: any free port).",
)
@click.option(
    "--tokens",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The tokens file (see docs/collector.md); re-read on SIGHUP.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML file of collector settings.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="HTTP front-end processes sharing one writer process (1: a single process; "
    "0, the default: from the CPU count).",
)
def serve(
    db: Path, listen: str, tokens: Path | None, config_file: Path | None, workers: int | None
) -> int:
    """Serve uploads from agents until SIGTERM."""
    from corecensus.collector import CollectorConfig, config_from_mapping
    from corecensus.collector import serve as run

    try:
        # the flags checked first, before --listen or any file is read
        flags = {} if workers is None else {"workers": workers}
        config_from_mapping(CollectorConfig(db=db), flags, "--workers")
        host, port = _listen(listen)
        config = CollectorConfig(db=db, host=host, port=port, tokens=tokens)
        if config_file is not None:
            try:
                values = tomllib.loads(config_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{config_file}: {exc}") from exc
            config = config_from_mapping(config, values, str(config_file))
        config = config_from_mapping(config, flags, "--workers")  # the flag over the file
        return run(config)
    except click.BadParameter as exc:
        error(f"--listen: {exc.message}")
        return 2
    except (CorecensusError, OSError) as exc:
        error(str(exc))
        return 2


@collector.command()
@click.argument("name")
@click.option(
    "--hosts", required=True, help="Comma-separated host names this token may upload for, or '*'."
)
@click.option("--scopes", default="upload", show_default=True, help="upload, read, or upload,read.")
def token(name: str, hosts: str, scopes: str) -> int:
    """Print a new token for agent NAME (stdout) and its tokens-file line (stderr)."""
    from corecensus.collector.tokens import new_token

    try:
        secret, line = new_token(name, hosts, scopes)
    except ConfigError as exc:
        error(str(exc))
        return 2
    sys.stdout.write(secret + "\n")
    sys.stderr.write(f"add to the tokens file:\n{line}\n")
    return 0
