from bridge.surface.cli import main

raise SystemExit(main())
