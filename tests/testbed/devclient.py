"""A paho-mqtt device client for the Python test suites of the testbed and fakecloud.

    dev = DeviceClient.connect(tb, ident)        # raises ConnectRefused
    dev.subscribe("things/dev1/#")
    dev.publish("things/dev1/x", b"hi")          # waits for PUBACK
    msg = dev.wait_message("things/dev1/x")      # (topic, payload) or AssertionError
    dev.close()
"""

import ssl
import threading
import time

import paho.mqtt.client as mqtt


class ConnectRefused(Exception):
    pass


class DeviceClient:
    def __init__(self, client_id, protocol=mqtt.MQTTv311):
        self.client = mqtt.Client(client_id=client_id, protocol=protocol)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.messages = []
        self.connects = 0
        self.cond = threading.Condition()
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.connected = False

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload))
            self.cond.notify_all()

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        with self.cond:
            self.rc = rc
            if rc == 0:
                self.connects += 1
                self.connected = True
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        with self.cond:
            self.connected = False
            self.cond.notify_all()

    @classmethod
    def connect(cls, tb, ident=None, *, port=None, client_id=None, check_hostname=True,
                timeout=5.0, host="localhost"):
        """Connect with ident ({"cert","key"} or None for no client certificate).

        Returns a connected client running its network loop in a thread, or raises
        ConnectRefused when the TLS handshake or the MQTT CONNECT does not succeed.
        """
        name = client_id or (ident["cert"].rsplit("/", 1)[-1].rsplit(".", 1)[0] if ident else "nocert")
        dev = cls(name)
        ctx = tb.client_context(ident and ident["cert"], ident and ident["key"],
                                check_hostname=check_hostname)
        dev.client.tls_set_context(ctx)
        try:
            dev.client.connect(host, port or tb.port, keepalive=30)
            dev._wait_connack(timeout)
        except ConnectRefused:
            dev._drop()
            raise
        except (ssl.SSLError, OSError) as e:
            dev._drop()
            raise ConnectRefused("TLS: %s" % e)
        dev.client.loop_start()
        return dev

    def _drop(self):
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _wait_connack(self, timeout):
        # Drive the loop by hand until CONNACK: with TLS 1.3 a refused client
        # certificate shows only after the handshake, as a closed connection.
        deadline = time.monotonic() + timeout
        while self.connects == 0:
            rc = self.client.loop(0.05)
            if getattr(self, "rc", 0) != 0:
                raise ConnectRefused("CONNACK refused: %s" % mqtt.connack_string(self.rc))
            if rc != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectRefused("connection lost before CONNACK: %s" % mqtt.error_string(rc))
            if time.monotonic() > deadline:
                raise ConnectRefused("no CONNACK within %.0f s" % timeout)

    def subscribe(self, topic, qos=1, timeout=5.0):
        """Subscribe and wait for the SUBACK; return the granted QoS list."""
        done = threading.Event()
        granted = []

        def on_subscribe(client, userdata, mid, qos_list, properties=None):
            granted.extend(qos_list)
            done.set()
        self.client.on_subscribe = on_subscribe
        rc, _mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(rc)
        assert done.wait(timeout), "no SUBACK for %s" % topic
        return granted

    def publish(self, topic, payload, qos=1, timeout=5.0):
        if isinstance(payload, str):
            payload = payload.encode()
        info = self.client.publish(topic, payload, qos=qos)
        if qos > 0:
            info.wait_for_publish(timeout)
            assert info.is_published(), "no PUBACK for %s" % topic
        return info

    def wait_message(self, topic, timeout=5.0):
        """The first received message on exactly this topic (not consumed)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if m[0] == topic:
                        return m
                left = deadline - time.monotonic()
                assert left > 0, "no message on %s within %.1f s; got %r" % (topic, timeout, self.messages)
                self.cond.wait(left)

    def wait_connects(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.connects < n:
                left = deadline - time.monotonic()
                assert left > 0, "connected %d times, wanted %d" % (self.connects, n)
                self.cond.wait(left)

    def topics(self):
        with self.cond:
            return [m[0] for m in self.messages]

    def close(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
