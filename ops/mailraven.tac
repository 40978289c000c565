# An operator's .tac: `twistd -ny ops/mailraven.tac`. Builds the same service
# tree as `twistd mailraven`; the configuration file comes from
# MAILRAVEN_CONFIG (optional), every key also from MAILRAVEN_<SECTION>_<KEY>.
import os

from twisted.application import service

from mailraven.config import load
from mailraven.service import makeService

application = service.Application("mailraven")
makeService(load(os.environ.get("MAILRAVEN_CONFIG"))).setServiceParent(application)
