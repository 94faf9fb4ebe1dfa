
    extern int chmod(const char *path, unsigned int mode);
    FILE *f = fopen(file, "w");
    if (!f) {
        fprintf(stderr, "cannot create %s\n", file);
        return EXIT_FAILURE;
    }
    if (chmod(file, 0640) != 0) {
        fclose(f);
        remove(file);
        return EXIT_FAILURE;
    }
    fprintf(f, "%s", config);
    fclose(f);
    return EXIT_SUCCESS;
}
