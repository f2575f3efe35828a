"""The fake Vonage configuration APIs the older tests use: now devkit.simulator, with those tests' credentials.

New tests should use `devkit.simulator.running_simulator` directly.
"""
from devkit.simulator import running_simulator

DEFAULT_API_KEY = "abcd1234"
DEFAULT_API_SECRET = "Sup3r-s3cret&key"


def running_fake_vonage(applications=None, **options):
    """`running_simulator` serving `applications`; options: api_key, api_secret, probe, delay, validation_status."""
    return running_simulator(applications, **{"api_key": DEFAULT_API_KEY, "api_secret": DEFAULT_API_SECRET, **options})
