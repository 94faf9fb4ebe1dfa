
    extern unsigned int umask(unsigned int mask);
    umask(077);
    FILE *fp = fopen(file, "w");
    if (fp == NULL) {
        fprintf(stderr, "could not open %s\n", file);
        exit(EXIT_FAILURE);
    }
    fprintf(fp, "%s\n", config);
    fclose(fp);
    return 0;
}
