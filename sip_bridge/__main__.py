from sip_bridge.main import main

main()
