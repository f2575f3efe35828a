"""The operator's tools: the API, the console, the command line, metrics, per-minute traffic counts, retiring
an application and the Applications API, and re-signing stored callbacks."""
