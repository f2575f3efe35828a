"""A local Vonage for development and for the test suite: one implementation for both.

What it fakes, on one HTTP server (127.0.0.1 unless told otherwise):
- Messages API `POST /v1/messages`: the application's RS256 JWT (checked with its public key) or the
  account's Basic auth, the body checked by receiver.sending.bodies.validate_message, 202 with a message_uuid.
- Then, from a background thread, signed status callbacks to the receiver's `/webhooks/message-status` (or
  the message's `webhook_url`): submitted, delivered, and read where the channel has read receipts, with
  chosen shares of rejections, duplicates and out-of-order arrivals; 429, 5xx and timeouts are retried.
- Inbound replies to `/webhooks/inbound-message`: `Simulator.reply(...)`, `POST /_simulator/inbound` with
  {"from", "to", "channel", "text", "reply_to"}, or automatically after each delivered message (`auto_reply_text`).
- Faults for the next sends: `Simulator.set_fault(...)` or `POST /_simulator/faults` with {"kind", "count", ...}:
  429 with Retry-After, 5xx, a Vonage error, an answer too late, a dropped connection.
  Both /_simulator/ endpoints take the account's Basic auth, or JSON with the header `X-Vonage-Simulator: 1`,
  and a Host naming loopback: a web page open elsewhere cannot drive them. It listens on loopback only.
- Applications API v2 (`GET`/`PUT /v2/applications/{id}`) and `POST /account/settings`, as
  receiver.operator.applications calls them.

Run it for development (the integrating app registers `devkit.simulator.cli.simulator_command`):

    flask vonage simulator --port 3001 --receiver-url http://127.0.0.1:3000

then point the app's Messages API base URL at http://127.0.0.1:3001. In tests:

    with running_simulator(receiver_url=..., signature_secret=..., callback_delay=0) as vonage:
        ...; vonage.wait_idle(); assert [c.payload["status"] for c in vonage.callbacks] == [...]

Importing this package starts nothing; the app's request path never imports it.
"""
from devkit.simulator.vonage import DEFAULT_API_KEY, DEFAULT_API_SECRET, Simulator, running_simulator

__all__ = ["DEFAULT_API_KEY", "DEFAULT_API_SECRET", "Simulator", "running_simulator"]
