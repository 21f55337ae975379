"""Process configuration, read from the environment once, at worker or CLI start.

Workflow code never reads this: what a run needs is pinned into its history by an activity.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.exits import ExitError, ExitStatus

PACKAGE_DIR = Path(__file__).resolve().parent
EXAMPLE_POLICY = PACKAGE_DIR.parent / "policy" / "example.yaml"
DEFAULT_PRICES = PACKAGE_DIR / "prices.yaml"
# Threads a worker runs tool calls on (its activity executor).
TOOL_THREADS = 32
# Temporal's longest task queue name.
QUEUE_NAME_CHARS = 1000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    temporal_address: str = Field("127.0.0.1:7233", validation_alias="TEMPORAL_ADDRESS")
    namespace: str = Field("default", validation_alias="TEMPORAL_NAMESPACE")
    task_queue: str = Field("airlock", validation_alias="AIRLOCK_TASK_QUEUE")
    # Where workspace control workflows run; by default the same queue as the runs.
    control_task_queue: str | None = Field(None, validation_alias="AIRLOCK_CONTROL_TASK_QUEUE")
    policy_path: Path = Field(EXAMPLE_POLICY, validation_alias="AIRLOCK_POLICY")
    db: str = Field(".airlock/backoffice.db", validation_alias="AIRLOCK_DB")
    # Where the workspace switches live (the control store): shared by every worker of the
    # namespace, as a SQLite path or a PostgreSQL URL.
    control_db: str = Field(".airlock/control.db", validation_alias="AIRLOCK_CONTROL_DB")
    # A workspace control workflow continues as new past this many history events.
    control_events_per_history: int | None = Field(None, ge=20, validation_alias="AIRLOCK_CONTROL_EVENTS_PER_HISTORY")
    default_model: str = Field("scripted", validation_alias="AIRLOCK_MODEL")
    # Comma-separated modules, each defining TOOLS: list[Tool].
    tool_modules: str = Field("tools.backoffice", validation_alias="AIRLOCK_TOOL_MODULES")
    prices_path: Path = Field(DEFAULT_PRICES, validation_alias="AIRLOCK_PRICES")
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    openai_timeout_s: float = Field(60.0, validation_alias=AliasChoices("AIRLOCK_OPENAI_TIMEOUT_S"))
    # Workflow tasks this worker holds at once. A task running tool calls (local activities)
    # keeps its slot until they end, and the worker runs TOOL_THREADS tool calls at a time: a
    # task beyond that only waits for a thread while its 10 s task timeout runs, and under a
    # burst of starts such tasks time out and their tool calls run again.
    max_concurrent_workflow_tasks: int = Field(
        TOOL_THREADS, ge=2, validation_alias="AIRLOCK_MAX_CONCURRENT_WORKFLOW_TASKS"
    )
    log_level: str = Field("INFO", validation_alias="AIRLOCK_LOG_LEVEL")
    # Tool results larger than this (bytes of JSON) are stored by reference, not in histories.
    blob_threshold: int = Field(4096, ge=256, validation_alias="AIRLOCK_BLOB_THRESHOLD")
    # Approvers' private signing keys on this machine (`airlock keys new`, `airlock approve`).
    keys_dir: Path = Field(Path.home() / ".config" / "airlock" / "keys", validation_alias="AIRLOCK_KEYS_DIR")
    # The worker's keys for sealing secret tool fields (docs/secrets.md): base64, newest first,
    # comma-separated. Unset, the key file is used, created with a new key if absent (a
    # development default: every worker of a deployment must hold the same keys).
    secrets_key: SecretStr | None = Field(None, validation_alias="AIRLOCK_SECRETS_KEY")
    secrets_key_file: Path = Field(Path(".airlock/secrets.key"), validation_alias="AIRLOCK_SECRETS_KEY_FILE")

    @field_validator("task_queue", "control_task_queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        # A name Temporal would refuse (empty) or could not even be sent (a byte that is not
        # UTF-8 in the environment arrives as a surrogate) is named here, not deep in a request.
        if value is not None and (not value.strip() or len(value) > QUEUE_NAME_CHARS or not value.isprintable()):
            raise ValueError(f"a task queue name is 1 to {QUEUE_NAME_CHARS} printable characters")
        return value

    @cached_property
    def tool_module_list(self) -> list[str]:
        return [m.strip() for m in self.tool_modules.split(",") if m.strip()]


class SettingsError(ExitError):
    """A setting in the environment is not valid: said in one line, naming the variable."""

    status = ExitStatus.USAGE


def settings_error(error: ValidationError) -> SettingsError | None:
    """`error` as one line naming the environment variable, or None when it is not the settings'."""
    if error.title != Settings.__name__:
        return None
    problems = error.errors()
    first = problems[0]
    name = ".".join(str(part) for part in first["loc"]) or "settings"
    got = repr(first.get("input"))
    shown = got if len(got) <= 120 else got[:117] + "..."
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    message = first["msg"].removeprefix("Value error, ")
    return SettingsError(f"setting {name}: {message} (got {shown}){more}")
