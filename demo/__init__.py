"""The whole pipeline on one machine, for people (`make demo`) and for tests/e2e.

Not part of the installed package (pyproject installs `receiver*` only): it runs from a
checkout, and imports of the receiver only `receiver.client`, `receiver.embedded_pg` and
`receiver.logs`.

- `processes`: starts PostgreSQL, the receiver, Alertmanager, the traffic generator and
  Prometheus on 127.0.0.1, and stops everything again.
- `probes`: where each piece listens, whether it is ready, what state it holds.
- `story`: one tenant fails and recovers; every reaction reported with its time.
- `traffic`: a tenant-traffic generator with an in-process gateway that obeys the breakers
  through `receiver.client` (`python -m demo.traffic`; the `traffic` service of
  docker-compose.yml).
- `__main__`: `make demo`, the story told as it happens.
"""
