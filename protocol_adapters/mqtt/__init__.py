"""The MQTT adapter: devices that publish their own JSON on their own topics.

- :mod:`protocol_adapters.mqtt.mapping`: pure topic matching, payload paths, value coercion,
  command envelopes and reply correlation (no sockets);
- :mod:`protocol_adapters.mqtt.driver`: the asyncio driver over aiomqtt (one client per broker);
- :mod:`protocol_adapters.mqtt.simulator`: a device following a model's MQTT binding.
"""
