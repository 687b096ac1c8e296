#!/bin/sh
# Remove netcheck from a Mac (run as root, e.g. from Jamf). Each user's own data
# (~/Library/Application Support/netcheck, ~/Library/Caches/netcheck, the log) stays.
label=org.netcheck.agent
for uid in $(/usr/bin/dscl . -list /Users UniqueID | /usr/bin/awk '$2 >= 500 {print $2}'); do
    /bin/launchctl bootout "gui/$uid/$label" 2>/dev/null || true
done
rm -f /Library/LaunchAgents/org.netcheck.agent.plist
rm -rf /usr/local/netcheck
/usr/sbin/pkgutil --forget org.netcheck.agent.pkg 2>/dev/null || true
exit 0
