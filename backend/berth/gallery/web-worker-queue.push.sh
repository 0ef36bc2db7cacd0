#!/bin/busybox sh
# Appends the request body to the queue.
body=$(/bin/busybox head -c "${CONTENT_LENGTH:-0}")
echo "$body" >> /tmp/queue
printf 'Content-Type: text/plain\r\n\r\nqueued\n'
