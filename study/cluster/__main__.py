"""``python -m study.cluster login``: see :func:`study.cluster.main`."""

from study.cluster import main

raise SystemExit(main())
