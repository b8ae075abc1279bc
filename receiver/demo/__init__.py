"""The whole pipeline on one machine, for people and for the end-to-end test.

- `traffic`: a demo tenant-traffic generator with an in-process gateway that obeys the
  breakers through `receiver.client` (`python -m receiver.demo.traffic`; the `traffic`
  service of docker-compose.yml).
- `stack`: starts PostgreSQL, the receiver, the traffic generator, Prometheus and
  Alertmanager on 127.0.0.1, watches what happens, and stops everything again.
- `__main__`: `make demo`, the story told as it happens.
"""
