"""Default limits of plan delivery (no imports: `oneiric --help` reads them)."""

DEFAULT_TIMEOUT = 30.0  # seconds a whole transfer may take
DEFAULT_MAX_MANIFEST_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_PLAN_BYTES = 16 * 1024 * 1024
