"""What every flow stands on: settings (config), logs, the web server's worker (serving, framing), value
formats and development files. Nothing here knows about callbacks."""
