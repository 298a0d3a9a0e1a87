from birdkeras.cli import main

raise SystemExit(main())
