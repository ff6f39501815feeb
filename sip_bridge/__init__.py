"""SIP bridge: a separate process that answers SIP calls and turns each into a Converse stream.

PJSIP (through pjsua2) runs in one dedicated thread (sip_bridge.sip); each call's Converse
stream runs on asyncio (sip_bridge.bridge); they meet in thread-safe queues and the playout
buffer (sip_bridge.playout). Only this package imports pjsua2 (GPL-2.0).
"""
