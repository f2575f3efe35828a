"""The worker: claim stored callbacks, parse, reconcile, dispatch to handlers/, settle (loop), run as a
supervised thread or process (supervisor), with the handler tables checked at start (dispatch)."""
