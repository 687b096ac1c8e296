<#
.SYNOPSIS
    Intune Win32 app custom detection script: installed, at this package's version.
.DESCRIPTION
    Intune reads the result from standard output: anything written plus exit 0 means installed.
#>
$expected = '@VERSION@'
$exe = Join-Path $env:ProgramFiles 'netcheck\netcheck.exe'
$installed = (Get-ItemProperty -Path 'HKLM:\SOFTWARE\netcheck' -Name 'Version' -ErrorAction SilentlyContinue).Version
if ((Test-Path -LiteralPath $exe) -and ($installed -eq $expected)) {
    $reported = (& $exe --version) -join ' '
    if ($reported -eq "netcheck, version $expected") {
        Write-Output "netcheck $expected"
        exit 0
    }
}
exit 1
