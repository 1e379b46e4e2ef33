"""``python -m ops.kafka start|stop|status``: a local single-node KRaft broker."""

from ops.kafka.launcher import BrokerError, BrokerInfo, LocalBroker, broker_answers

__all__ = ["BrokerError", "BrokerInfo", "LocalBroker", "broker_answers"]
