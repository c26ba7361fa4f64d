from capi_relay.tools.cli import main

raise SystemExit(main())
