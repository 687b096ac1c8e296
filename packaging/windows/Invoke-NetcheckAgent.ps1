<#
.SYNOPSIS
    The scheduled task's action: enroll this user once, then one agent run (check, sweeps, upload).
.DESCRIPTION
    Runs as the signed-in user. The collector URL, site and secret come from the deployment
    (Install-Netcheck.ps1 wrote them to %ProgramData%\netcheck), never from the user.
    Exit code: netcheck's (0 done, 3 collector unreachable, 4 configuration error).
#>
[CmdletBinding()]
param()
$ErrorActionPreference = 'Stop'

$exe = Join-Path $env:ProgramFiles 'netcheck\netcheck.exe'
$machineConfig = Join-Path $env:ProgramData 'netcheck\enrollment.json'
$userDir = Join-Path $env:LOCALAPPDATA 'netcheck'
$token = Join-Path $userDir 'Config\token'
$log = Join-Path $userDir 'Data\agent.log'
New-Item -ItemType Directory -Force -Path (Split-Path $log) | Out-Null

if (-not (Test-Path -LiteralPath $token)) {
    if (-not (Test-Path -LiteralPath $machineConfig)) {
        Write-Error "netcheck is not configured: $machineConfig is missing (reinstall with -CollectorUrl)"
        exit 4
    }
    $config = Get-Content -Raw -LiteralPath $machineConfig | ConvertFrom-Json
    $enrollArgs = @('enroll', $config.collector_url, '--secret-file', $config.secret_file)
    if ($config.site) {
        $enrollArgs += @('--tag', "site=$($config.site)")
    }
    & $exe @enrollArgs 2>> $log
    if ($LASTEXITCODE -ne 0) {
        exit $LASTEXITCODE
    }
}
& $exe agent --once --log-file $log
exit $LASTEXITCODE
