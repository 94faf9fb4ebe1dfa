
    srand(time(NULL));
    int r = 1001 + rand() % 9000;
    printf("%d\n", r);
    return 0;
}
