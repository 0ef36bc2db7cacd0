#!/bin/busybox sh
# Takes the oldest job off the queue (nothing when it is empty).
printf 'Content-Type: text/plain\r\n\r\n'
if [ -s /tmp/queue ]; then
  /bin/busybox head -n 1 /tmp/queue
  /bin/busybox sed -i 1d /tmp/queue
fi
