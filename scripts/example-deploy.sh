#!/bin/sh
# The example deploy: prints a few lines, takes a moment, succeeds.
# Replace it (script.path in the config) with your own deploy.
echo "Deploy started in $(pwd)"
echo "Fetching the latest version..."
sleep 1
echo "Restarting the service..."
sleep 1
echo "Done."
