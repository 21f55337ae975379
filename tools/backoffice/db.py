"""The demo back office's database: schema, seed data, and the idempotency ledger.

SQLite by default (a file under `.airlock/`), PostgreSQL when `AIRLOCK_DB` is a `postgresql://` URL.
Money is stored in integer cents. Writes open an immediate (SQLite) or row-locking (PostgreSQL)
transaction so that a check such as "how much is still refundable" and the write it guards cannot
interleave with another write.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)

metadata = MetaData()

WRITE_LOCK = "airlock_write_lock"

customers = Table(
    "customers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=False),
    Column("phone", String(64), nullable=False, default=""),
    Column("tier", String(32), nullable=False, default="standard"),
    Column("notes", Text, nullable=False, default=""),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("customer_id", String(32), ForeignKey("customers.id"), nullable=False),
    Column("total_cents", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("items", Text, nullable=False, default=""),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("order_id", String(32), ForeignKey("orders.id"), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False, default="issued"),
    # A workflow id: Temporal allows up to 1000 characters.
    Column("created_by", Text, nullable=False),
)

tickets = Table(
    "tickets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("priority", String(16), nullable=False, default="normal"),
    Column("order_id", String(32), nullable=True),
    Column("assignee", String(200), nullable=True),
)

emails = Table(
    "emails",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("to_address", String(320), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("sent_by", Text, nullable=False),
)

kb_articles = Table(
    "kb_articles",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("title", String(300), nullable=False),
    Column("body", Text, nullable=False),
)

# The idempotency ledger: a write and its ledger row commit in one transaction, and the primary
# key is what makes a second execution with the same key impossible. Keys longer than the column
# are stored by their hash (`tools.runner.ledger_key`). `result` is the first execution as
# recorded, with the diff and facts its preview saw inside the write's transaction.
tool_calls = Table(
    "tool_calls",
    metadata,
    Column("idempotency_key", String(300), primary_key=True),
    Column("tool", String(200), nullable=False),
    Column("args_hash", String(64), nullable=False),
    Column("result", Text, nullable=False),
)


# Large tool results, content-addressed (see tools.blobs); histories keep only the hash.
blobs = Table(
    "blobs",
    metadata,
    Column("digest", String(80), primary_key=True),
    Column("content", Text, nullable=False),
)


def cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_exact())


def usd(amount_cents: int) -> Decimal:
    return (Decimal(amount_cents) / 100).quantize(Decimal("0.01"))


def database_url(setting: str) -> str:
    """`AIRLOCK_DB` is a SQLite path or a full SQLAlchemy/PostgreSQL URL."""
    if "://" in setting:
        if setting.startswith("postgresql://"):
            return "postgresql+psycopg://" + setting.removeprefix("postgresql://")
        return setting
    path = Path(setting).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def connect(setting: str) -> Engine:
    url = database_url(setting)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # Let SQLAlchemy, not pysqlite, decide when transactions begin, so that `begin`
            # below can take the write lock up front.
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA foreign_keys=ON")

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            # Writers take SQLite's write lock at BEGIN: a read-then-write check inside the
            # transaction then sees no concurrent writer. Readers do not queue behind them.
            write = conn.get_execution_options().get(WRITE_LOCK, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


def create_tables(engine: Engine, tables: MetaData, then: Callable[[Connection], None] | None = None) -> None:
    """Creates `tables` (and runs `then` in the same transaction), also when several workers start
    together: SQLite's write lock, or on PostgreSQL an advisory lock, since concurrent CREATE
    TABLEs race on its catalog."""
    with engine.connect() as c:
        conn = c.execution_options(**{WRITE_LOCK: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7235001)"))
            tables.create_all(conn)
            if then is not None:
                then(conn)


def create_schema(engine: Engine) -> None:
    """Creates the tables and seeds them once, also when several workers start together."""

    def widen_and_seed(conn: Connection) -> None:
        _widen(conn)
        if conn.execute(select(func.count()).select_from(customers)).scalar_one() == 0:
            seed(conn)

    create_tables(engine, metadata, widen_and_seed)


# Columns that held workflow ids as varchar(200) before they became text.
WIDENED = (("refunds", "created_by"), ("emails", "sent_by"))


def _widen(conn: Connection) -> None:
    """Brings a PostgreSQL database created before WIDENED up to date (SQLite does not enforce
    lengths). Changing varchar to text rewrites nothing."""
    if conn.dialect.name != "postgresql":
        return
    for table, column in WIDENED:
        kind = conn.execute(
            text(
                "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = :t AND column_name = :c"
            ),
            {"t": table, "c": column},
        ).scalar_one_or_none()
        if kind == "character varying":
            conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE text"))


def seed(conn: Connection) -> None:
    """The contract's demo data: the same on every machine, so first commands behave the same."""
    conn.execute(
        insert(customers),
        [
            {
                "id": "C-100",
                "name": "Dana Whitfield",
                "email": "dana@example.com",
                "phone": "+1-555-0100",
                "tier": "gold",
                "notes": "",
            },
            {
                "id": "C-101",
                "name": "Ravi Okafor",
                "email": "ravi@acme.test",
                "phone": "+1-555-0101",
                "tier": "standard",
                "notes": "",
            },
        ],
    )
    conn.execute(
        insert(orders),
        [
            {
                "id": "ORD-1001",
                "customer_id": "C-100",
                "total_cents": 18000,
                "status": "delivered",
                "items": "1x ceramic pour-over set",
            },
            {
                "id": "ORD-1002",
                "customer_id": "C-101",
                "total_cents": 95000,
                "status": "delivered",
                "items": "1x espresso machine",
            },
        ],
    )
    conn.execute(
        insert(tickets),
        [
            {
                "id": "T-17",
                "subject": "ORD-1001 arrived damaged",
                "body": "Customer reports the carafe arrived cracked.",
                "status": "open",
                "priority": "normal",
                "order_id": "ORD-1001",
                "assignee": None,
            }
        ],
    )
    conn.execute(
        insert(kb_articles),
        [
            {
                "id": "KB-1",
                "title": "Refunds for damaged goods",
                "body": "Damaged items are refunded in full up to the order total once the "
                "customer confirms the damage. Refunds above 50 USD need a second pair of eyes.",
            },
            {
                "id": "KB-2",
                "title": "Changing a customer's contact details",
                "body": "Contact details may be changed at the customer's request. "
                "Names are changed only by the billing team.",
            },
        ],
    )
