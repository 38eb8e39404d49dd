"""The stand-in WSO2 API-M distribution: pack builder, migration kit and the server they run.

``build_distribution`` / ``build_migration_kit`` are the public API (sandbox.distribution.build);
the server program is ``python -m sandbox.distribution.server`` (started by the pack's
bin/api-manager.sh). See README.md here for what is faithful and what is not.
"""

from sandbox.distribution.build import (
    KEYSTORE_PASSWORD,
    MigrationKit,
    build_distribution,
    build_migration_kit,
    unpack_distribution,
)

__all__ = [
    "KEYSTORE_PASSWORD",
    "MigrationKit",
    "build_distribution",
    "build_migration_kit",
    "unpack_distribution",
]
