"""The development stack: everything that runs trackerdcs on one machine without the pod.

A local Mosquitto with the project's ACL (:mod:`.localbroker`), a local EPICS soft IOC helper (:mod:`.localca`),
a process supervisor with line-waiting helpers (:mod:`.supervisor`), the whole simulation stack behind
``dcs-sim`` (:mod:`.simstack`) and the CI policy plugin of the test suite (:mod:`.cipolicy`). Used by
``scripts/sim.sh``, the tests and the benchmarks; never part of a container image.
"""
