"""The warehouse operations tokenbill's Python assets need, on DuckDB or on Spark.

A handful of operations cover what the catalog loader, the wallet ledger, the invoice export
and statements, the enforcement file, the alerts feed and the dbt steps' observations do with
the warehouse: replace whole tables (the ``catalog.*`` tables), replace the rows of a table
that match a condition (a month of ``billing.wallet_ledger``; ``false`` appends, as the
alerts feed does), read a query's rows (as Arrow, or tuples as DuckDB's ``fetchall``), ask
whether a relation exists, list a schema's tables, create a missing table and group writes in
a transaction. What they read is small (per wallet-hour, per invoice); SQL parameters are
positional ``?`` on both engines, and the SQL they send is the subset both dialects read.
``Warehouse.tables()`` (defs/resources.py) opens the engine's implementation for a step.

``DuckDBWarehouse`` is today's behaviour, on an open connection (every replacement in one
transaction; ``transaction()`` groups several). ``SparkWarehouse`` runs them in a
``SparkSession``: it reads the tables and views dbt-spark builds through the same metastore,
and writes tokenbill's own tables to the lake, ``{lake root}/{schema}/{table}/``
(``lake_replace_tables``: one Parquet file swapped in whole), where the dbt project's Spark
sources read them (``macros/portable/lake_sources.sql``), registering each as those sources
are registered. Spark has no multi-statement transaction: each write is atomic on its own.

``spark_session`` is the session the assets open: local mode on the dbt ``spark`` target's
warehouse directory and Derby metastore (its JVM ended when the step ends, because embedded
Derby admits one JVM at a time and dbt's own Spark runs in the dbt process), or Spark Connect
(``sc://``) on a cluster, whose metastore takes concurrent clients.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa


class WarehouseTables(Protocol):
    """What an asset may do with the warehouse, whichever the engine."""

    #: ``duckdb`` or ``spark``: for the few places whose SQL differs (quoting).
    engine: str

    def replace_tables(self, schema: str, tables: Mapping[str, pa.Table]) -> None:
        """Create or replace ``schema.<name>`` with each table's rows and types."""

    def replace_where(
        self, table: str, condition: str, params: Sequence[Any], rows: pa.Table
    ) -> None:
        """Delete the rows of ``table`` matching ``condition`` (SQL, ``?`` parameters), then
        insert ``rows`` (by column name)."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """The rows of a query (``?`` parameters)."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """The rows of a query as tuples (DuckDB's ``fetchall()``)."""

    def relation_exists(self, schema: str, name: str) -> bool:
        """Whether the warehouse has a table or view ``schema.name``."""

    def base_table_columns(self, schema: str) -> dict[str, list[str]]:
        """The tables (not views) of ``schema`` and their columns, in order."""

    def ensure_table(self, table: str, ddl: str, empty: pa.Table) -> None:
        """Create ``table`` if missing: ``ddl`` on DuckDB, ``empty``'s schema on Spark."""

    def transaction(self) -> AbstractContextManager[None]:
        """Several writes together: one transaction on DuckDB; on Spark each write is
        atomic on its own (a failure leaves the earlier writes of the block done)."""


class DuckDBWarehouse:
    """The operations on an open DuckDB connection (``Warehouse.connect()``)."""

    engine = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection, in_transaction: bool = False):
        self.con = con
        #: True: the connection is inside its holder's transaction, which the holder ends.
        self._in_transaction = in_transaction

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Every write inside one transaction: committed on success, rolled back on error
        (nested blocks, and the caller's transaction of ``in_transaction``, are joined)."""
        if self._in_transaction:
            yield
            return
        self.con.execute("begin transaction")
        self._in_transaction = True
        try:
            yield
            self.con.execute("commit")
        except Exception:
            self.con.execute("rollback")
            raise
        finally:
            self._in_transaction = False

    def ensure_table(self, table: str, ddl: str, empty: pa.Table) -> None:
        self.con.execute(ddl)

    def replace_tables(self, schema: str, tables: Mapping[str, pa.Table]) -> None:
        with self.transaction():
            self.con.execute(f"create schema if not exists {schema}")
            for name, table in tables.items():
                self.con.register("incoming", table)
                self.con.execute(
                    f"create or replace table {schema}.{name} as select * from incoming"
                )
                self.con.unregister("incoming")

    def replace_where(
        self, table: str, condition: str, params: Sequence[Any], rows: pa.Table
    ) -> None:
        with self.transaction():
            self.con.execute(f"delete from {table} where {condition}", list(params))
            if rows.num_rows:
                self.con.register("incoming", rows)
                self.con.execute(f"insert into {table} by name select * from incoming")
                self.con.unregister("incoming")

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        return self.con.execute(sql, list(params)).to_arrow_table()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.con.execute(sql, list(params)).fetchall()

    def relation_exists(self, schema: str, name: str) -> bool:
        return bool(
            self.con.execute(
                "select count(*) from information_schema.tables "
                "where table_schema = ? and table_name = ?",
                [schema, name],
            ).fetchone()[0]
        )

    def base_table_columns(self, schema: str) -> dict[str, list[str]]:
        return {
            name: columns
            for name, columns in self.con.execute(
                "select table_name, list(column_name order by ordinal_position) "
                "from information_schema.columns where table_schema = ? and table_name in "
                "(select table_name from information_schema.tables where table_schema = ? "
                "and table_type = 'BASE TABLE') group by 1",
                [schema, schema],
            ).fetchall()
        }


class SparkQueryError(RuntimeError):
    """A query Spark rejected, with Spark's own message and the query's start."""


class SparkWarehouse:
    """The operations in a ``pyspark.sql.SparkSession`` (session time zone UTC: tokenbill's
    timestamps are naive UTC), reading the tables and views dbt-spark builds through the
    session's catalog (the same metastore), and writing tokenbill's own tables (the catalog,
    the ledger, the exported alerts) to the lake, where the dbt project reads its Spark
    sources: ``{lake_root}/{schema}/{table}/`` (SPARK.md), each write swapped in whole
    (:func:`lake_replace_tables`) and the table (re)registered over it, as
    ``create_lake_sources`` registers it.

    Without a lake root (``lake_root=None``) tables are written as the session's own tables
    (``saveAsTable``), for a catalog no dbt source reads."""

    engine = "spark"

    def __init__(self, spark, lake_root: str | None = None):
        self.spark = spark
        self.lake_root = lake_root
        spark.conf.set("spark.sql.session.timeZone", "UTC")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield  # no multi-statement transactions on Spark: each write is atomic on its own

    def _frame(self, table: pa.Table):
        return self.spark.createDataFrame(table)

    def ensure_table(self, table: str, ddl: str, empty: pa.Table) -> None:
        schema, name = table.split(".")
        if not self.relation_exists(schema, name):
            self.replace_tables(schema, {name: empty})

    def replace_tables(self, schema: str, tables: Mapping[str, pa.Table]) -> None:
        self.spark.sql(f"create database if not exists {schema}")
        if self.lake_root is None:
            for name, table in tables.items():
                self._frame(table).write.mode("overwrite").saveAsTable(f"{schema}.{name}")
            return
        # Timestamps as UTC instants (SPARK.md's lake contract): Spark reads them as its
        # ``timestamp``, the type the dbt sources declare, not as ``timestamp_ntz``.
        lake_replace_tables(
            self.lake_root, schema, {name: utc_instants(table) for name, table in tables.items()}
        )
        for name in tables:
            self._register(f"{schema}.{name}")

    def _register(self, table: str) -> None:
        """The lake directory of ``table`` as a Parquet table of the catalog (schema read from
        its file), its file listing refreshed."""
        from orchestration.defs.ingestion.lake import lake_name, spark_path

        location = f"{spark_path(self.lake_root).rstrip('/')}/{lake_name(table)}"
        self.spark.sql(
            f"create table if not exists {table} using parquet "
            f"options (recursiveFileLookup 'true') location '{location}'"
        )
        self.spark.sql(f"refresh table {table}")

    def replace_where(
        self, table: str, condition: str, params: Sequence[Any], rows: pa.Table
    ) -> None:
        schema, name = table.split(".")
        if not self.relation_exists(schema, name):
            kept = rows.slice(0, 0)
        else:
            # Spark's Parquet tables take no DELETE: the kept rows and the new ones replace
            # the table, read whole before it is written (small: a ledger, an alerts list).
            kept = self.query(f"select * from {table} where not ({condition})", params)
        if self.lake_root is None:
            merged = self._frame(pa.concat_tables([kept, rows.select(kept.column_names)]))
            merged.localCheckpoint().write.mode("overwrite").saveAsTable(table)
            return
        merged = pa.concat_tables([kept.select(rows.column_names).cast(rows.schema), rows])
        self.replace_tables(schema, {name: merged})

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        from pyspark.errors import PySparkException

        try:
            return naive_utc_timestamps(self.spark.sql(sql, args=list(params)).toArrow())
        except PySparkException as exc:
            # Spark's message is read from the JVM, which ends with the step's session: read
            # now, the error still says what failed once the session is gone.
            first = " ".join(sql.split())[:160]
            raise SparkQueryError(f"Spark could not run the query ({first} ...): {exc}") from None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        # Through Arrow: ``collect()`` would give timestamps in the Python process's zone.
        table = self.query(sql, params)
        return list(zip(*(c.to_pylist() for c in table.columns), strict=True))

    def relation_exists(self, schema: str, name: str) -> bool:
        return bool(self.spark.catalog.tableExists(f"{schema}.{name}"))

    def base_table_columns(self, schema: str) -> dict[str, list[str]]:
        if not self.spark.catalog.databaseExists(schema):
            return {}
        return {
            t.name: [c.name for c in self.spark.catalog.listColumns(f"{schema}.{t.name}")]
            for t in self.spark.catalog.listTables(schema)
            if t.tableType != "VIEW" and not t.isTemporary
        }


def as_tables(
    con: duckdb.DuckDBPyConnection | WarehouseTables, in_transaction: bool = False
) -> WarehouseTables:
    """The operations on ``con``: a DuckDB connection (callers and tests that hold one) is
    wrapped (``in_transaction``: inside the caller's open transaction, which its writes join),
    a ``WarehouseTables`` (``Warehouse.tables()``) taken as it is."""
    if isinstance(con, duckdb.DuckDBPyConnection):
        return DuckDBWarehouse(con, in_transaction=in_transaction)
    return con


def spark_conf(warehouse_dir: str) -> dict[str, str]:
    """The session settings of the dbt ``spark`` target (profiles.yml), for a session that
    shares its warehouse directory and Derby metastore."""
    return {
        "spark.sql.warehouse.dir": warehouse_dir,
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={warehouse_dir}/metastore_db;create=true"
        ),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={warehouse_dir}",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "2",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # Exact decimal arithmetic, as the dbt target's (profiles.yml, SPARK.md "Money").
        "spark.sql.decimalOperations.allowPrecisionLoss": "false",
    }


@contextmanager
def spark_session(master: str, warehouse_dir: str) -> Iterator[Any]:
    """A ``SparkSession`` on the dbt ``spark`` target's tables, for the length of the block.

    ``master`` ``local[N]`` (one machine): a Spark in this process on the target's warehouse
    directory and Derby metastore. Embedded Derby admits one JVM at a time, and dbt-spark
    (session mode) runs its own Spark in the dbt process, so this session's JVM is ended on
    leaving the block: steps that write the warehouse run one at a time (the warehouse pool),
    so dbt never meets it. ``sc://host:15002`` (Spark Connect: a cluster, Databricks): a
    remote session; the cluster's metastore (Hive, Glue, Unity) takes concurrent clients.
    ``spark://``/``yarn``/``k8s://`` masters get the same settings as ``local``; on a cluster
    point ``spark.hadoop.javax.jdo.option.ConnectionURL`` (or ``hive.metastore.uris``) at
    the shared metastore through ``spark-defaults.conf``.
    """
    from pyspark.sql import SparkSession

    if master.startswith("sc://"):
        session = SparkSession.builder.remote(master).getOrCreate()
        try:
            session.conf.set("spark.sql.session.timeZone", "UTC")
            yield session
        finally:
            session.stop()
        return
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None or SparkContext._gateway is not None:
        # A session of this process on other settings (static ones: the metastore, the
        # warehouse directory): it would be returned instead of ours. Its JVM is ended first.
        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
        end_spark_jvm()
    Path(warehouse_dir).mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder.master(master).appName("tokenbill").enableHiveSupport()
    for key, value in spark_conf(warehouse_dir).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    try:
        yield session
    finally:
        session.stop()
        end_spark_jvm()


def end_spark_jvm() -> None:
    """End this process's Spark JVM (py4j gateway) and with it the Derby metastore it holds
    booted; the next session starts a new one. The JVM exits when its stdin closes
    (pyspark's ``PythonGatewayServer``)."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    if proc is not None:
        proc.stdin.close()
        proc.wait(timeout=120)
    SparkContext._gateway = None
    SparkContext._jvm = None


def utc_instants(table: pa.Table) -> pa.Table:
    """Naive (UTC) timestamp columns as UTC instants (``timestamp(unit, tz='UTC')``)."""
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is None:
            instant = pa.timestamp(field.type.unit, tz="UTC")
            table = table.set_column(
                index, field.with_type(instant), table.column(index).cast(instant)
            )
    return table


def naive_utc_timestamps(table: pa.Table) -> pa.Table:
    """Spark's timestamps (instants, UTC in this session) as the naive UTC timestamps DuckDB's
    ``timestamp`` columns give, so both engines return the same types and values."""
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            naive = pa.timestamp(field.type.unit)
            table = table.set_column(index, field.with_type(naive), table.column(index).cast(naive))
    return table


def lake_replace_tables(root: str, schema: str, tables: Mapping[str, pa.Table]) -> None:
    """Replace ``{root}/{schema}/{name}/`` with one Parquet file of each table's rows, each
    directory swapped atomically (a local root; ``lake.py`` for the choice on S3)."""
    from orchestration.defs.ingestion.lake import LakeSink, new_run_id

    sink, run_id = LakeSink(root), new_run_id()
    swaps = [sink.stage(f"{schema}/{name}", run_id, table) for name, table in tables.items()]
    for swap in swaps:  # every file written before any table is swapped
        swap()
