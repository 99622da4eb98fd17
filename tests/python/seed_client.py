"""The original CacheServer's Python client (Addons/Client.py, as seed-spec A.7 describes it) and the
checks of its ut_server.py, run against a bankcache server: the original's users must keep working.

The client sends bare JSON objects with no newline, one `socket.send` each, and reads one `recv(2048)`
per reply, in strict lockstep. bankcache answers a request that has no line end after it without one, as
the original did, so the checks below compare the raw replies with the original's exact strings.

Usage: python3 seed_client.py HOST PORT
"""
import json
import socket
import sys
import time


class Client:
    def __init__(self, host, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.connect((host, port))

    def send(self, msg):
        self.sock.send(msg.encode())

    def receive(self):
        return self.sock.recv(2048).decode()

    def sendOp(self, op):
        self.send(op)
        return self.receive()

    def entry_set(self, bank, key, value, lifetime=0):
        return self.sendOp('{"op":"put","bank":"%s","key":"%s","value":%s,"lifetime":%s}'
                           % (bank, key, json.dumps(value), lifetime))

    def entry_get(self, bank, key):
        return self.sendOp('{"op":"get","bank":"%s","key":"%s"}' % (bank, key))

    def entry_delete(self, bank, key):
        return self.sendOp('{"op":"delete","bank":"%s","key":"%s"}' % (bank, key))

    def entry_touch(self, bank, key):
        return self.sendOp('{"op":"touch","bank":"%s","key":"%s"}' % (bank, key))

    def entry_incr(self, bank, key, value):
        return self.sendOp('{"op":"incr","bank":"%s","key":"%s","value":"%s"}' % (bank, key, value))

    def bank_keys(self, bank):
        return self.sendOp('{"op":"bank.keys","bank":"%s"}' % bank)

    def bank_reset(self, bank):
        return self.sendOp('{"op":"bank.reset","bank":"%s"}' % bank)

    def bank_list(self):
        return self.sendOp('{"op":"bank.list"}')

    def close(self):
        self.sock.close()


failures = []


def check(got, want, what):
    if got != want:
        failures.append("%s: got %r, want %r" % (what, got, want))


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    c = Client(host, port)
    ok_empty = '{"status": "ok", "data": {}}'

    # test_001_put_get
    check(c.entry_set("Bank1", "key1", "value1"), ok_empty, "put")
    check(c.entry_get("Bank1", "key1"), '{"status": "ok", "data": "value1"}', "get")
    # test_010_get_missing
    check(c.entry_get("Bank1", "key_missing"),
          '{"status": "error", "message": "Key key_missing doesn\'t exist"}', "get missing")
    # test_020_banks
    check(c.entry_set("Bank2", "key1", "value1"), ok_empty, "put bank2")
    check(c.bank_list(), '{"status": "ok", "data": ["Bank1", "Bank2"]}', "bank.list")
    # test_030_keys
    check(c.entry_set("Bank2", "key2", {"a": [1, 2]}), ok_empty, "put dict")
    check(c.bank_keys("Bank2"), '{"status": "ok", "data": ["key1", "key2"]}', "bank.keys")
    check(c.entry_get("Bank2", "key2"), '{"status": "ok", "data": {"a": [1, 2]}}', "get dict")
    # test_040_delete
    check(c.entry_delete("Bank2", "key1"), ok_empty, "delete")
    check(c.entry_delete("Bank2", "key1"),
          '{"status": "error", "message": "Key key1 doesn\'t exist"}', "delete missing")
    # test_050_reset
    check(c.bank_reset("Bank2"), ok_empty, "reset")
    check(c.bank_keys("Bank2"), '{"status": "ok", "data": []}', "keys after reset")
    # test_060_timeout, scaled down: lifetime 0.6 s, touched at 0.3 s, alive at 0.6 s, gone at 1.2 s
    start = time.time()
    check(c.entry_set("Bank1", "key_t", "v", 0.6), ok_empty, "put with lifetime")
    time.sleep(max(0, start + 0.3 - time.time()))
    check(c.entry_touch("Bank1", "key_t"), ok_empty, "touch")
    time.sleep(max(0, start + 0.6 - time.time()))
    check(c.entry_get("Bank1", "key_t"), '{"status": "ok", "data": "v"}', "alive after touch")
    time.sleep(max(0, start + 1.2 - time.time()))
    check(c.entry_get("Bank1", "key_t"),
          '{"status": "error", "message": "Key key_t doesn\'t exist"}', "expired")
    # test_070_incr
    check(c.entry_set("Bank1", "key2", 1), ok_empty, "put number")
    check(c.entry_incr("Bank1", "key2", 1), '{"status": "ok", "data": 2.0}', "incr")
    check(c.entry_incr("Bank1", "key2", "a"),
          '{"status": "error", "message": "The value must be an integer or a float"}', "incr bad delta")
    check(c.entry_set("Bank1", "key3", "value"), ok_empty, "put string")
    check(c.entry_incr("Bank1", "key3", 1),
          '{"status": "error", "message": "The value for key key3 isn\'t a number"}', "incr non-number")
    c.close()

    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print("seed client: all checks passed")


if __name__ == "__main__":
    main()
