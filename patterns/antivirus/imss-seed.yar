/*
 * imss-milter seed signatures (the antivirus pattern component).
 * A rule's meta `category` is one of: virus, spyware, grayware, adware,
 * dialer, hacking-tool, joke, password-cracking, remote-access (default
 * virus); meta `name` is the name findings show (default: the rule name).
 */

rule Eicar_Test_File
{
    meta:
        name = "Eicar-Test-Signature"
        category = "virus"
        description = "The EICAR anti-malware test file: the 68-byte string, optionally followed by whitespace, 128 bytes at most"
    strings:
        // the two halves of the test string, kept apart so this file is not itself a test file
        $head = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$"
        $tail = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    condition:
        filesize <= 128 and $head at 0 and $tail at 28
}
