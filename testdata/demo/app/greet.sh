#!/bin/sh
cat /app/message.txt
echo "running as uid $(id -u) in $(pwd)"
