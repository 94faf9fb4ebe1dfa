
    srand(time(NULL));
    int r = rand() + 1001;
    printf("%d\n", r);
    return 0;
}
