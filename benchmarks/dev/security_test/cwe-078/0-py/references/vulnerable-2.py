
    proc = subprocess.Popen(f'ls -l "{dirname}"', shell=True, stdout=subprocess.PIPE)
    out, _ = proc.communicate()
    return str(out)
