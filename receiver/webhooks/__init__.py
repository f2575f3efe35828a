"""Webhooks in: the routes Vonage calls, how a request is verified (guard, signatures), and how its bytes
become what is stored (payloads). Verify, record, answer; nothing else runs on the request path."""
