"""Development tools, outside the runtime: the local Vonage (simulator), sample callbacks (samples) and
`flask vonage trigger`. The web app never imports them; the tests and the benchmark do."""
