"""Create a DBOS 3.4 system database, the way `DBOS.migrate` does for a DBOS application.

Usage: python migrate.py <system database URL>
  postgresql://user@host:port/db (postgres:// is accepted too) or sqlite:////absolute/path
"""

import sys

from dbos import DBOS


def sqlalchemy_url(url: str) -> str:
    # SQLAlchemy knows the scheme only as postgresql://.
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://"):]
    return url


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    DBOS.migrate(sqlalchemy_url(sys.argv[1]))
