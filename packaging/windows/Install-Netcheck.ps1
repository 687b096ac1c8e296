<#
.SYNOPSIS
    Intune Win32 app install command (runs as SYSTEM): netcheck for every user of this PC.
.DESCRIPTION
    Copies netcheck.exe and the task's script to %ProgramFiles%\netcheck, writes the enrollment
    settings the deployment gives (collector URL, site, the secret file shipped in the package)
    to %ProgramData%\netcheck, readable by users but writable only by administrators, and
    registers the scheduled task (netcheck-agent-task.xml). Re-running it upgrades in place.
.EXAMPLE
    powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\Install-Netcheck.ps1 -CollectorUrl https://netcheck.example.com -Site paris
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [ValidatePattern('^https://')]
    [string] $CollectorUrl,
    [string] $Site = '',
    # the enrollment secret, in a file inside the .intunewin package (never on the command line:
    # Intune logs command lines)
    [string] $SecretFile = (Join-Path $PSScriptRoot 'enroll-secret.txt')
)
$ErrorActionPreference = 'Stop'

$version = '@VERSION@'
$programDir = Join-Path $env:ProgramFiles 'netcheck'
$dataDir = Join-Path $env:ProgramData 'netcheck'
$secretCopy = Join-Path $dataDir 'enroll-secret.txt'

if (-not (Test-Path -LiteralPath $SecretFile)) {
    throw "the enrollment secret file $SecretFile is missing from the package"
}
New-Item -ItemType Directory -Force -Path $programDir, $dataDir | Out-Null
Copy-Item -Force -LiteralPath (Join-Path $PSScriptRoot 'netcheck.exe') -Destination $programDir
Copy-Item -Force -LiteralPath (Join-Path $PSScriptRoot 'Invoke-NetcheckAgent.ps1') -Destination $programDir
Copy-Item -Force -LiteralPath $SecretFile -Destination $secretCopy

# %ProgramData%\netcheck: administrators and SYSTEM change it, users only read it
$acl = New-Object System.Security.AccessControl.DirectorySecurity
$acl.SetAccessRuleProtection($true, $false)
$inherit = [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit'
$none = [System.Security.AccessControl.PropagationFlags]::None
foreach ($rule in @(
        @('S-1-5-18', 'FullControl'), @('S-1-5-32-544', 'FullControl'), @('S-1-5-32-545', 'ReadAndExecute'))) {
    $sid = New-Object System.Security.Principal.SecurityIdentifier($rule[0])
    $acl.AddAccessRule((New-Object System.Security.AccessControl.FileSystemAccessRule(
                $sid, $rule[1], $inherit, $none, 'Allow')))
}
Set-Acl -LiteralPath $dataDir -AclObject $acl

$settings = [ordered]@{ collector_url = $CollectorUrl; site = $Site; secret_file = $secretCopy }
$settings | ConvertTo-Json | Set-Content -Encoding UTF8 -LiteralPath (Join-Path $dataDir 'enrollment.json')

$taskXml = Get-Content -Raw -LiteralPath (Join-Path $PSScriptRoot 'netcheck-agent-task.xml')
Register-ScheduledTask -TaskPath '\netcheck\' -TaskName 'netcheck agent' -Xml $taskXml -Force | Out-Null

# what Detect-Netcheck.ps1 reads
New-Item -Force -Path 'HKLM:\SOFTWARE\netcheck' | Out-Null
Set-ItemProperty -Path 'HKLM:\SOFTWARE\netcheck' -Name 'Version' -Value $version
Write-Output "netcheck $version installed in $programDir"
exit 0
