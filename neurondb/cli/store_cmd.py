"""`neurondb info` and `neurondb query`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from neurondb.cli.errors import one_line_errors
from neurondb.errors import UsageError
from neurondb.store.io import atomic_write_bytes, atomic_write_text, check_output_file

FORMATS = ("table", "csv", "json", "parquet")


def info_command(
    store: Path = typer.Argument(..., help="Store directory."),
    partial: bool = typer.Option(False, "--partial", help="Also list runs still being extracted."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Read a store that failed its integrity check (what is intact; says what it leaves out)."),
) -> None:
    """Show a store's model, runs, sizes and the SQL views it offers."""
    import neurondb
    from neurondb.query.connection import describe_views

    with one_line_errors():
        st = neurondb.open(store, partial=partial, verify=not no_verify)
        m = st.manifest
        con = Console(soft_wrap=True)
        con = Console(soft_wrap=True, width=max(con.width, 150))
        shape = m.model.shape
        con.print(f"[bold]store[/bold] {st.path}  (schema v{m.schema_version}, created {m.created})")
        con.print(f"[bold]model[/bold] {m.model.name}  {m.model.model_class}  family "
                  f"{shape.family}, d_model {shape.d_model}, fingerprint {m.model.fingerprint[:12]}")
        for s, w in shape.widths.items():
            widths = f"{w[0]}" if len(set(w)) == 1 else ",".join(map(str, w))
            con.print(f"  stack {s}: {len(w)} layers, d_ff {widths}")
        t = Table(title="runs")
        for c in ("run", "split", "mode", "examples", "rows", "accuracy", "positions", "prompt",
                  "grad", "dtype", "size"):
            t.add_column(c)
        for info in st.runs():
            size = _disk_bytes(st.run_dir(info.run))
            acc = f"{info.accuracy:.4f}" if info.accuracy is not None else "-"
            t.add_row(info.run, info.split, info.mode, str(info.n_examples),
                      ", ".join(f"{k}:{v}" for k, v in info.n_rows.items()), acc,
                      ",".join(info.positions), f"{info.n_prompt} tok" if info.n_prompt else "-",
                      "yes" if info.grad else "no",
                      info.stored_dtype or "-",
                      f"{size / 1e6:,.1f} MB")
        con.print(t)
        views = describe_views(st.connection)
        con.print("[bold]SQL views[/bold]: " + "; ".join(f"{k}({', '.join(v)})" for k, v in views.items()))
        con.print("[bold]table macros[/bold]: activations(run, split, stack, layer, neuron|neurons), "
                  "gradients(...)")
        _left_out(st)
        st.close()


def query_command(
    store: Path = typer.Argument(..., help="Store directory."),
    sql: str = typer.Argument(..., help="A SELECT query over the store's views and macros."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv, json or parquet."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file (required for parquet)."),
    also: list[Path] | None = typer.Option(None, "--with", help="Open another store together with STORE (repeatable)."),
    limit: int = typer.Option(100, "--max-rows", help="Rows shown in table format."),
    partial: bool = typer.Option(False, "--partial", help="Include runs still being extracted (complete shards only)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Read a store that failed verification (what is intact)."),
) -> None:
    """Run read-only SQL over a store (DuckDB, embedded)."""
    import neurondb

    with one_line_errors():
        if fmt not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
        if fmt == "parquet" and output is None:
            raise UsageError("--format parquet needs --output FILE")
        check_output_file(output, "output", "--output",
                          f"answer.{'txt' if fmt == 'table' else fmt}")
        st = neurondb.open(store, *(also or []), partial=partial, verify=not no_verify)
        arrow = st.connection.arrow(sql)
        _emit(arrow, fmt, output, limit)
        _left_out(st)  # after the answer, so that its first lines stay the answer
        st.close()


def _emit(arrow, fmt: str, output: Path | None, limit: int) -> None:
    import io
    import sys

    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(arrow, buf)
        atomic_write_bytes(output, buf.getvalue())  # a failed write leaves no partial file
        typer.echo(f"wrote {arrow.num_rows} rows to {output}", err=True)
        return
    if fmt == "csv":
        buf = io.BytesIO()
        pcsv.write_csv(arrow, buf)
        text = buf.getvalue().decode()
    elif fmt == "json":
        df = arrow.to_pandas()
        text = df.to_json(orient="records", lines=True, force_ascii=False)
    else:
        t = Table(show_lines=False)
        for c in arrow.column_names:
            t.add_column(c)
        shown = arrow.slice(0, limit).to_pylist()
        for row in shown:
            t.add_row(*[Text(_fmt(v)) for v in row.values()])  # data, not rich markup
        if output is None:
            Console().print(t)
            if arrow.num_rows > limit:
                typer.echo(f"({arrow.num_rows} rows, {limit} shown; --max-rows N or --format csv)")
            return
        buf_console = Console(file=io.StringIO(), width=200)
        buf_console.print(t)
        text = buf_console.file.getvalue()
    if output is None:
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    else:
        atomic_write_text(output, text)
        typer.echo(f"wrote {arrow.num_rows} rows to {output}", err=True)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        inner = ", ".join(_fmt(x) for x in v[:8])
        return f"[{inner}{', ...' if len(v) > 8 else ''}]"
    return "" if v is None else str(v)


def _left_out(st) -> None:
    """With --no-verify: say on stderr what was left out as damaged or missing."""
    import sys

    sys.stdout.flush()  # the answer first
    for line in getattr(st, "left_out", []):
        typer.echo(f"note: left out (--no-verify): {line}", err=True)


def verify_command(
    store: Path = typer.Argument(..., help="Store directory."),
    repair: bool = typer.Option(False, "--repair", help="First remove what dead writers left "
                                "(temporary files, partial shards, stale locks; never committed "
                                "data), then verify."),
) -> None:
    """Check everything: checksums of every file, HDF5 and Parquet row counts, missing runs,
    shards and results. Prints each problem; exit 1 when damaged, 0 when OK."""
    from neurondb.store.verify import verify_store

    with one_line_errors():
        store = Path(store)
        if not store.is_dir():
            raise UsageError(f"{store} is not a directory; give the store's directory")
        if not any((store / n).exists() for n in ("manifest.json", "runs", "catalog", "results")):
            raise UsageError(f"{store} is not a neurondb store (no manifest.json, runs/ or "
                             "catalog/)")
        if repair:
            for line in _repair(store):
                typer.echo(f"repair: {line}")
        rep = verify_store(store)
    for note in rep.notes:
        typer.echo(f"note: {note}")
    for p in rep.problems:
        typer.echo(f"problem: {p}")
    where = []
    if rep.damaged:
        where.append(f"{len(rep.damaged)} shard(s)")
    if rep.damaged_runs:
        where.append(f"run(s) {', '.join(rep.damaged_runs)}")
    if rep.damaged_results:
        where.append(f"result(s) {', '.join(rep.damaged_results)}")
    typer.echo(f"{'OK' if rep.ok else 'DAMAGED'}: {rep.checked_files} files, "
               f"{rep.checked_bytes / 1e6:,.1f} MB checked, {len(rep.problems)} problem(s)"
               + (f" in {'; '.join(where)}" if where else ""))
    if not rep.ok:
        typer.echo("fix: each problem names its fix; `neurondb query/info --no-verify` reads what "
                   "is intact meanwhile")
        raise typer.Exit(1)


def _repair(store: Path) -> list[str]:
    """``neurondb.store.repair.repair(root)``: what it removed, one line each."""
    try:
        from neurondb.store.repair import repair
    except ModuleNotFoundError as e:
        if e.name != "neurondb.store.repair":
            raise
        from neurondb.errors import StoreError

        raise StoreError("`neurondb verify --repair` is not available in this build "
                         "(neurondb.store.repair is missing); re-extract the damaged runs "
                         "instead") from e
    return [str(x) for x in repair(store)]


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)
    app.command("query")(query_command)
    app.command("verify")(verify_command)


def _disk_bytes(d: Path) -> int:
    """Bytes of the files under ``d``, a file with several names (a hard link: a one-shard
    profile run's state) counted once."""
    import stat

    seen: dict[tuple[int, int], int] = {}
    for f in d.rglob("*"):
        st = f.lstat()
        if stat.S_ISREG(st.st_mode):
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())
