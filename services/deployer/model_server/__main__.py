from services.deployer.model_server.server import main

raise SystemExit(main())
