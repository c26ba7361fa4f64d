from capi_relay.cli import main

raise SystemExit(main())
