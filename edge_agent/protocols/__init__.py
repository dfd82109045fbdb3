"""Protocols beyond Modbus, one module each (``bacnet``, ``mqtt``, ``coap``), each with:

- ``parse_connection(reader, obj, path) -> <Protocol>Connection | None``: the device's
  ``connection:`` mapping, read with the configuration's
  :class:`~thing_models.document_reader.DocumentReader` (errors with ``file:line:column``);
  the connection class derives from :class:`edge_agent.config.ProtocolConnection`;
- ``make_driver(device, model, shared) -> DeviceDriver``: the device's driver
  (:class:`protocol_adapters.base.DeviceDriver`); ``shared`` is one dict per agent for what
  several drivers share (one BACnet application, one MQTT client per broker ...).
"""
