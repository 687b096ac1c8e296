<#
.SYNOPSIS
    Intune Win32 app uninstall command (runs as SYSTEM).
.DESCRIPTION
    Removes the scheduled task, %ProgramFiles%\netcheck, %ProgramData%\netcheck (the enrollment
    settings and secret) and the detection value. Each user's own data (%LOCALAPPDATA%\netcheck:
    device token, spool, log) stays unless -RemoveUserData is given.
#>
[CmdletBinding()]
param(
    [switch] $RemoveUserData
)
$ErrorActionPreference = 'Stop'

Unregister-ScheduledTask -TaskPath '\netcheck\' -TaskName 'netcheck agent' -Confirm:$false -ErrorAction SilentlyContinue
foreach ($dir in @((Join-Path $env:ProgramFiles 'netcheck'), (Join-Path $env:ProgramData 'netcheck'))) {
    if (Test-Path -LiteralPath $dir) {
        Remove-Item -Recurse -Force -LiteralPath $dir
    }
}
Remove-Item -Recurse -Force -Path 'HKLM:\SOFTWARE\netcheck' -ErrorAction SilentlyContinue
if ($RemoveUserData) {
    Get-ChildItem -Directory -Path (Join-Path $env:SystemDrive 'Users') | ForEach-Object {
        $userData = Join-Path $_.FullName 'AppData\Local\netcheck'
        if (Test-Path -LiteralPath $userData) {
            Remove-Item -Recurse -Force -LiteralPath $userData
        }
    }
}
exit 0
